// The load-test vocabulary and its command-line spellings: workload (accounts, currencies,
// operation mix, skew, amounts) and load shape (open loop at a rate with an optional spike,
// or closed loop with a number of clients). Parsers throw UsageError with the bad spelling.
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';

export class UsageError extends Error {}

/** hold: authorize, then capture (all or part) or void; refund: transfer, then refund part of it. */
export type OpKind = 'transfer' | 'deposit' | 'withdraw' | 'hold' | 'refund';
export const OP_KINDS: readonly OpKind[] = ['transfer', 'deposit', 'withdraw', 'hold', 'refund'];

export type Mix = Record<OpKind, number>;

export type Skew =
  | { kind: 'uniform' }
  /** Accounts ranked in a seeded random order, rank k drawn with weight 1/(k+1)^s. */
  | { kind: 'zipf'; s: number }
  /** A fraction of transfers credit one merchant account per currency; the rest are uniform. */
  | { kind: 'hot'; fraction: number };

/** `factor` times the base rate from `atS` seconds into the run, for `forS` seconds. */
export interface Spike { factor: number; atS: number; forS: number }

export interface WorkloadSpec {
  accounts: number;
  currencies: string[];
  mix: Mix;
  skew: Skew;
  /** Each operation moves a uniform amount in 1..maxAmount minor units. */
  maxAmount: number;
  /** Deposited into each account at setup. */
  fundingMinor: bigint;
  /** overdraftLimit of each account opened. */
  overdraftMinor: bigint;
}

export type LoadShape =
  | { mode: 'open'; rate: number; spike: Spike | undefined }
  | { mode: 'closed'; concurrency: number };

const posNumber = (raw: string, what: string): number => {
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v <= 0) throw new UsageError(`${what} must be a positive number, got "${raw}"`);
  return v;
};

export function parsePositiveInt(raw: string, what: string): number {
  const v = posNumber(raw, what);
  if (!Number.isSafeInteger(v)) throw new UsageError(`${what} must be a positive integer, got "${raw}"`);
  return v;
}

export function parsePositive(raw: string, what: string): number {
  return posNumber(raw, what);
}

/**
 * The fixed benches (core, batch, cluster) run set workloads; their one command-line knob is
 * the measured seconds per workload: `--duration S`, else BENCH_SECONDS (the spelling
 * docs/tradeoffs.md uses), else the bench's default.
 */
export function parseBenchDuration(argv: string[], fromEnv: string | undefined, defaultS: number): number | 'help' {
  let v;
  try {
    v = parseArgs({ args: argv, options: { duration: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (v.help) return 'help';
  if (v.duration !== undefined) return parsePositive(v.duration, '--duration');
  return fromEnv !== undefined && fromEnv !== '' ? parsePositive(fromEnv, 'BENCH_SECONDS') : defaultS;
}

/** A run's seed: the one given, else a random one (printed by the run, so it can be replayed). */
export function parseSeed(raw: string | undefined): number {
  const seed = raw !== undefined ? Number(raw) : randomInt(2 ** 31);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new UsageError(`--seed must be a non-negative integer, got "${raw}"`);
  return seed;
}

export function parseNonNegative(raw: string, what: string): number {
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v < 0) throw new UsageError(`${what} must be >= 0, got "${raw}"`);
  return v;
}

export function parseMinor(raw: string, what: string): bigint {
  if (!/^(0|[1-9][0-9]{0,18})$/.test(raw)) throw new UsageError(`${what} must be integer minor units, got "${raw}"`);
  return BigInt(raw);
}

/** `transfer=80,deposit=10,withdraw=10`; a kind left out has weight 0. */
export function parseMix(raw: string): Mix {
  const mix: Mix = { transfer: 0, deposit: 0, withdraw: 0, hold: 0, refund: 0 };
  for (const part of raw.split(',')) {
    const m = /^\s*([a-z]+)\s*=\s*([0-9]+(?:\.[0-9]+)?)\s*$/.exec(part);
    const kind = m?.[1] === 'withdrawal' ? 'withdraw' : m?.[1];
    if (!m || !OP_KINDS.includes(kind as OpKind)) {
      throw new UsageError(`--mix takes kind=weight pairs of ${OP_KINDS.join(', ')}, got "${part}"`);
    }
    mix[kind as OpKind] = Number(m[2]);
  }
  if (OP_KINDS.every((k) => mix[k] === 0)) throw new UsageError('--mix needs at least one positive weight');
  return mix;
}

/** `uniform`, `zipf:1.1` or `hot:0.9`. */
export function parseSkew(raw: string): Skew {
  if (raw === 'uniform') return { kind: 'uniform' };
  const m = /^(zipf|hot):([0-9]*\.?[0-9]+)$/.exec(raw);
  if (!m) throw new UsageError(`--skew is uniform, zipf:S or hot:F, got "${raw}"`);
  const v = Number(m[2]);
  if (m[1] === 'zipf') {
    if (!(v > 0)) throw new UsageError(`zipf exponent must be > 0, got "${raw}"`);
    return { kind: 'zipf', s: v };
  }
  if (!(v >= 0 && v <= 1)) throw new UsageError(`hot fraction must be in [0, 1], got "${raw}"`);
  return { kind: 'hot', fraction: v };
}

/** `10x@10s+5s`: ten times the rate from second 10, for 5 seconds. */
export function parseSpike(raw: string): Spike {
  const m = /^([0-9]*\.?[0-9]+)x@([0-9]*\.?[0-9]+)s\+([0-9]*\.?[0-9]+)s$/.exec(raw);
  if (!m) throw new UsageError(`--spike is FACTORx@STARTs+LENGTHs (e.g. 10x@10s+5s), got "${raw}"`);
  const spike = { factor: Number(m[1]), atS: Number(m[2]), forS: Number(m[3]) };
  if (!(spike.factor > 0) || !(spike.forS > 0)) throw new UsageError(`--spike factor and length must be positive, got "${raw}"`);
  return spike;
}

export function parseCurrencies(raw: string): string[] {
  const list = raw.split(',').map((c) => c.trim()).filter((c) => c !== '');
  if (list.length === 0 || list.some((c) => !/^[A-Z]{3}$/.test(c))) {
    throw new UsageError(`--currencies takes ISO 4217 codes separated by commas, got "${raw}"`);
  }
  return [...new Set(list)];
}

export function describeSkew(s: Skew): string {
  switch (s.kind) {
    case 'uniform': return 'uniform';
    case 'zipf': return `zipf:${s.s}`;
    case 'hot': return `hot:${s.fraction}`;
  }
}

export function describeMix(m: Mix): string {
  return OP_KINDS.filter((k) => m[k] > 0).map((k) => `${k}=${m[k]}`).join(',');
}

export function describeLoad(l: LoadShape): string {
  if (l.mode === 'closed') return `closed loop, ${l.concurrency} clients`;
  const spike = l.spike ? `, spike ${l.spike.factor}x at ${l.spike.atS}s for ${l.spike.forS}s` : '';
  return `open loop, ${l.rate}/s${spike}`;
}

/**
 * Open-loop schedule: when request i is due, and how many there are in all. The rate is piecewise constant (base, then the spike), so both are exact: request i
 * is scheduled at a fixed instant whatever the server does, which is what keeps coordinated
 * omission out of the latencies.
 */
export class RateSchedule {
  private readonly segments: { from: number; to: number; rate: number; before: number }[] = [];

  constructor(rate: number, spike: Spike | undefined, readonly durationS: number) {
    const cuts: { from: number; to: number; rate: number }[] = [];
    if (spike && spike.atS < durationS) {
      const end = Math.min(durationS, spike.atS + spike.forS);
      if (spike.atS > 0) cuts.push({ from: 0, to: spike.atS, rate });
      cuts.push({ from: spike.atS, to: end, rate: rate * spike.factor });
      if (end < durationS) cuts.push({ from: end, to: durationS, rate });
    } else {
      cuts.push({ from: 0, to: durationS, rate });
    }
    let before = 0;
    for (const c of cuts) {
      this.segments.push({ ...c, before });
      before += (c.to - c.from) * c.rate;
    }
  }

  get total(): number {
    const last = this.segments[this.segments.length - 1]!;
    return Math.floor(last.before + (last.to - last.from) * last.rate + 1e-9);
  }

  /** When request i (0-based) is due, in seconds from the start. */
  timeOf(i: number): number {
    for (const s of this.segments) {
      const inSeg = (s.to - s.from) * s.rate;
      if (i < s.before + inSeg) return s.from + (i - s.before) / s.rate;
    }
    return this.durationS;
  }

  rateAt(t: number): number {
    for (const s of this.segments) if (t < s.to) return s.rate;
    return this.segments[this.segments.length - 1]!.rate;
  }
}
