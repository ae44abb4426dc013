// Seeded randomness for the load generator: one seed reproduces every choice of a run (which
// operation, which accounts, which amount), so a failure found under load can be replayed.
// sfc32 is small, fast and passes PractRand; Math.random cannot be seeded.

/** A 32-bit seed from any integer or string, mixed by splitmix32 so nearby seeds diverge. */
function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
    // Both halves of a seed above 2^32 count, so --seed 1 and --seed 4294967297 differ.
    const mix = splitmix32((seed % 0x1_0000_0000) ^ Math.floor(seed / 0x1_0000_0000));
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    // The first outputs of sfc32 are still close to the seed: discard them.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  nextUint32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextUint32() / 0x1_0000_0000;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new Error(`int(n) needs a positive integer, got ${n}`);
    return Math.floor(this.next() * n);
  }

  /** Uniform integer in [lo, hi], both inclusive. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** A random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i]!;
      p[i] = p[j]!;
      p[j] = t;
    }
    return p;
  }
}

/**
 * Ranks 0..n-1 drawn with probability proportional to 1/(rank+1)^s. The cumulative table is
 * built once (n doubles), then each draw is a binary search: exact, and fast enough for the
 * account counts a load test opens.
 */
export class ZipfSampler {
  private readonly cdf: Float64Array;

  constructor(readonly n: number, readonly s: number) {
    if (!Number.isInteger(n) || n <= 0) throw new Error(`zipf needs a positive count, got ${n}`);
    if (!(s > 0)) throw new Error(`zipf exponent must be > 0, got ${s}`);
    this.cdf = new Float64Array(n);
    let sum = 0;
    for (let k = 0; k < n; k++) {
      sum += 1 / Math.pow(k + 1, s);
      this.cdf[k] = sum;
    }
    for (let k = 0; k < n; k++) this.cdf[k]! /= sum;
  }

  sample(rng: Prng): number {
    const u = rng.next();
    let lo = 0;
    let hi = this.n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.cdf[mid]! > u) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** Picks one of several choices with integer weights, e.g. an operation mix. */
export class WeightedChoice<T> {
  private readonly cumulative: number[] = [];
  private readonly total: number;

  constructor(private readonly choices: readonly { value: T; weight: number }[]) {
    let sum = 0;
    for (const c of choices) {
      if (!(c.weight >= 0)) throw new Error(`weight must be >= 0, got ${c.weight}`);
      sum += c.weight;
      this.cumulative.push(sum);
    }
    if (sum <= 0) throw new Error('at least one weight must be positive');
    this.total = sum;
  }

  pick(rng: Prng): T {
    const u = rng.next() * this.total;
    const i = this.cumulative.findIndex((c) => u < c);
    return this.choices[i === -1 ? this.choices.length - 1 : i]!.value;
  }
}
