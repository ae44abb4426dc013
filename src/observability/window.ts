// Rates and latency quantiles over a recent window, from samples of a node's own counters:
// what the ops page shows without a Prometheus server. Pure arithmetic on cumulative values,
// the way Prometheus's rate() and histogram_quantile() read them, so the page and a dashboard
// built on /metrics agree.

/** One reading of the counters: money movements so far, and the latency histogram's cumulative buckets. */
export interface Sample {
  atMs: number;
  transfers: number;
  /** Cumulative observation count by bucket upper bound in seconds; the +Inf bucket under Infinity. */
  latency: ReadonlyMap<number, number>;
}

/** Bucket bounds and cumulative counts (the last one the +Inf bucket); JSON-safe, unlike Infinity. */
export interface Buckets {
  /** Finite upper bounds in seconds, ascending. */
  bounds: number[];
  /** counts[i]: observations <= bounds[i]; counts[bounds.length]: all observations. */
  counts: number[];
}

/** What happened between two samples: the increase of each counter and the time it took. */
export interface WindowDelta extends Buckets {
  seconds: number;
  transfers: number;
}

/** The last `capacity` samples, oldest first. */
export class SampleRing {
  private readonly items: Sample[] = [];

  constructor(private readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 2) throw new RangeError('a window needs at least two samples');
  }

  push(sample: Sample): void {
    this.items.push(sample);
    if (this.items.length > this.capacity) this.items.shift();
  }

  samples(): readonly Sample[] {
    return this.items;
  }
}

/**
 * The increase from the newest sample at least `windowMs` older than the latest (or the oldest
 * there is, early on: `seconds` says how long the window really is) to the latest. Undefined
 * with fewer than two samples. A counter never decreases within one process; a smaller value
 * (a reset) counts as no increase rather than a negative one.
 */
export function windowDelta(samples: readonly Sample[], windowMs: number): WindowDelta | undefined {
  const latest = samples.at(-1);
  if (!latest || samples.length < 2) return undefined;
  let base = samples[0]!;
  for (const s of samples) if (s !== latest && s.atMs <= latest.atMs - windowMs) base = s;
  const seconds = (latest.atMs - base.atMs) / 1_000;
  if (seconds <= 0) return undefined;
  const increase = (now: number, then: number): number => Math.max(0, now - then);
  const bounds = [...latest.latency.keys()].filter(Number.isFinite).sort((a, b) => a - b);
  const at = (s: Sample, bound: number): number => s.latency.get(bound) ?? 0;
  const counts = [...bounds, Infinity].map((b) => increase(at(latest, b), at(base, b)));
  return { seconds, transfers: increase(latest.transfers, base.transfers), bounds, counts };
}

/** Per second over the window; 0 for an empty window. */
export function ratePerS(delta: Pick<WindowDelta, 'seconds' | 'transfers'>): number {
  return delta.seconds > 0 ? delta.transfers / delta.seconds : 0;
}

/**
 * The q-quantile (0..1) of the observations in `buckets`, in seconds, as histogram_quantile()
 * estimates it: linear within the bucket that holds the rank, the first bucket starting at 0,
 * and the highest finite bound when the rank falls in +Inf. Null without observations.
 */
export function quantile(q: number, buckets: Buckets): number | null {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile ${q} is not within 0..1`);
  const { bounds, counts } = buckets;
  if (counts.length !== bounds.length + 1) throw new RangeError('one count per bound, and the +Inf bucket');
  const total = counts.at(-1)!;
  if (bounds.length === 0 || total <= 0) return null;
  const rank = q * total;
  const b = counts.findIndex((c) => c >= rank);
  if (b === bounds.length) return bounds.at(-1)!;
  const lower = b === 0 ? 0 : bounds[b - 1]!;
  const upper = bounds[b]!;
  if (b === 0 && upper <= 0) return upper;
  const before = b === 0 ? 0 : counts[b - 1]!;
  const inBucket = counts[b]! - before;
  return inBucket > 0 ? lower + (upper - lower) * ((rank - before) / inBucket) : lower;
}

/**
 * The buckets of several nodes added up, for a cluster-wide quantile; those with other bounds
 * than the first (a node of another version mid-upgrade) are left out rather than misread.
 */
export function mergeBuckets(all: readonly Buckets[]): Buckets | undefined {
  const first = all.find((b) => b.bounds.length > 0);
  if (!first) return undefined;
  const same = (b: Buckets) => b.bounds.length === first.bounds.length && b.bounds.every((x, i) => x === first.bounds[i]);
  const counts = first.counts.map(() => 0);
  for (const b of all.filter(same)) b.counts.forEach((c, i) => { counts[i]! += c; });
  return { bounds: [...first.bounds], counts };
}
