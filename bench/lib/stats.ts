// What one measured phase adds up to: counts by outcome, an HdrHistogram of the latencies of
// successful requests (microseconds, 3 significant digits), and one sample per second of
// throughput and p50/p90/p99, each second's percentiles from its own interval histogram.
import { encodeIntoCompressedBase64, Int32Histogram } from 'hdr-histogram-js';

/** A recorded latency above this (an hour) is a clock bug, not a measurement. */
const MAX_LATENCY_US = 3_600_000_000;

export function newHistogram(): Int32Histogram {
  // 1 µs resolution floor, 3 significant digits; grows if a latency exceeds the first range.
  const h = new Int32Histogram(1, 60_000_000, 3);
  h.autoResize = true;
  return h;
}

export type Outcome =
  /**
   * 201/202 for POSTs, 200 for probes. `items`: an answer that carries several payments (a
   * batch) counts as that many ok, so throughput stays payments per second; 1 when absent.
   */
  | { kind: 'ok'; status: number; items?: number }
  /** A business answer (4xx with a code, e.g. insufficient_funds): valid, but nothing moved. */
  | { kind: 'rejected'; code: string }
  /** No acceptable answer after the retries: 5xx, timeout, connection error, unexpected 4xx. */
  | { kind: 'error'; code: string };

export interface SecondSample {
  /** Seconds since the phase started (end of this second). */
  t: number;
  sent: number;
  ok: number;
  rejected: number;
  errors: number;
  /** ms; null in a second where nothing succeeded. */
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

export interface HistogramData {
  /** Log-spaced bins, 10 per decade: [fromMs, toMs) and how many latencies fell in each. */
  bins: { fromMs: number; toMs: number; count: number }[];
  /** The latency at each percentile, for the classic HdrHistogram percentile plot. */
  percentiles: { percentile: number; ms: number }[];
  /** The full histogram, compressed (HdrHistogram's V2 encoding): decode it to re-analyse. */
  hdrBase64: string;
}

export interface PhaseCounts {
  sent: number;
  /** Successful answers; a batch answer counts its successful items. */
  ok: number;
  /** 201 (settled when answered). */
  settled: number;
  /** 202 (credit still in flight when answered). */
  accepted: number;
  rejected: Record<string, number>;
  errors: Record<string, number>;
  /** Attempts beyond the first (same key and body). */
  retries: number;
  byOp: Record<string, { sent: number; ok: number }>;
}

const usToMs = (us: number): number => Math.round(us) / 1000;

export function summarize(h: Int32Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, p999Ms: 0, maxMs: 0 };
  return {
    count: h.totalCount,
    meanMs: usToMs(h.mean),
    p50Ms: usToMs(h.getValueAtPercentile(50)),
    p90Ms: usToMs(h.getValueAtPercentile(90)),
    p99Ms: usToMs(h.getValueAtPercentile(99)),
    p999Ms: usToMs(h.getValueAtPercentile(99.9)),
    maxMs: usToMs(h.maxValue),
  };
}

const PERCENTILES = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100];

export function histogramData(h: Int32Histogram): HistogramData {
  const byBin = new Map<number, number>();
  for (let i = 0; i < h.countsArrayLength; i++) {
    const count = h.getCountAtIndex(i);
    if (count === 0) continue;
    const ms = Math.max(h.valueFromIndex(i), 1) / 1000;
    const bin = Math.floor(10 * Math.log10(ms) + 1e-9);
    byBin.set(bin, (byBin.get(bin) ?? 0) + count);
  }
  const keys = [...byBin.keys()].sort((a, b) => a - b);
  const bins: HistogramData['bins'] = [];
  if (keys.length > 0) {
    // Empty bins between the first and last stay in, so the x axis is evenly logarithmic.
    for (let b = keys[0]!; b <= keys[keys.length - 1]!; b++) {
      bins.push({ fromMs: round3(10 ** (b / 10)), toMs: round3(10 ** ((b + 1) / 10)), count: byBin.get(b) ?? 0 });
    }
  }
  return {
    bins,
    percentiles: h.totalCount === 0 ? [] : PERCENTILES.map((p) => ({ percentile: p, ms: usToMs(h.getValueAtPercentile(p)) })),
    hdrBase64: encodeIntoCompressedBase64(h),
  };
}

const round3 = (v: number): number => Number(v.toPrecision(3));

/**
 * Collects one phase. Time is read from performance.now() (monotonic); seconds are counted
 * from start(), and a second is closed when the first event of a later second arrives or at
 * finish(), so the series has one sample per second with no timer of its own.
 */
export class PhaseStats {
  readonly latency = newHistogram();
  /** Open loop only: how late the client sent each request after its scheduled time. */
  readonly sendLag = newHistogram();
  readonly series: SecondSample[] = [];
  readonly counts: PhaseCounts = { sent: 0, ok: 0, settled: 0, accepted: 0, rejected: {}, errors: {}, retries: 0, byOp: {} };
  private startMs = 0;
  private second = 0;
  private interval = newHistogram();
  private cur = { sent: 0, ok: 0, rejected: 0, errors: 0 };
  private closed = false;
  /** Seconds from start to the end of the series (finish()). */
  seriesEndS = 0;
  /** Seconds from start to the last answer counted. */
  lastAnswerS = 0;
  /** Successful answers that arrived inside the window: the throughput's numerator. */
  okInWindow = 0;

  /**
   * `countLate`: whether answers after finish() still count (open loop: every request
   * scheduled in the window counts, however late its answer; closed loop: only what the
   * window saw, since each client's next request would have fallen outside it).
   */
  constructor(private readonly countLate: boolean) {}

  start(nowMs: number): void {
    this.startMs = nowMs;
  }

  get elapsedS(): number {
    return (performance.now() - this.startMs) / 1000;
  }

  private advance(nowMs: number): void {
    const s = Math.floor((nowMs - this.startMs) / 1000);
    while (this.second < s) this.closeSecond();
  }

  private closeSecond(): void {
    const h = this.interval;
    const has = h.totalCount > 0;
    this.series.push({
      t: this.second + 1,
      ...this.cur,
      p50: has ? usToMs(h.getValueAtPercentile(50)) : null,
      p90: has ? usToMs(h.getValueAtPercentile(90)) : null,
      p99: has ? usToMs(h.getValueAtPercentile(99)) : null,
      max: has ? usToMs(h.maxValue) : null,
    });
    h.reset();
    this.cur = { sent: 0, ok: 0, rejected: 0, errors: 0 };
    this.second++;
  }

  /** The p99 of the second in progress, else of the last closed one, for the progress line. */
  recentP99Ms(): number | null {
    if (this.interval.totalCount > 0) return usToMs(this.interval.getValueAtPercentile(99));
    return this.series[this.series.length - 1]?.p99 ?? null;
  }

  /** Successful answers per second inside the window. */
  throughputPerS(): number {
    return this.seriesEndS > 0 ? this.okInWindow / this.seriesEndS : 0;
  }

  recentRate(): number {
    return this.series[this.series.length - 1]?.ok ?? 0;
  }

  onSent(op: string, nowMs: number, lagUs?: number): void {
    if (!this.closed) this.advance(nowMs);
    this.counts.sent++;
    this.cur.sent++;
    (this.counts.byOp[op] ??= { sent: 0, ok: 0 }).sent++;
    if (lagUs !== undefined) this.sendLag.recordValue(Math.min(Math.max(1, Math.round(lagUs)), MAX_LATENCY_US));
  }

  onRetry(): void {
    this.counts.retries++;
  }

  onDone(op: string, outcome: Outcome, latencyUs: number, nowMs: number): void {
    if (this.closed) {
      if (!this.countLate) return;
    } else {
      this.advance(nowMs);
    }
    this.lastAnswerS = Math.max(this.lastAnswerS, (nowMs - this.startMs) / 1000);
    switch (outcome.kind) {
      case 'ok': {
        const us = Math.min(Math.max(1, Math.round(latencyUs)), MAX_LATENCY_US);
        this.latency.recordValue(us);
        if (!this.closed) this.interval.recordValue(us);
        const items = outcome.items ?? 1;
        this.counts.ok += items;
        if (!this.closed) {
          this.cur.ok += items;
          this.okInWindow += items;
        }
        (this.counts.byOp[op] ??= { sent: 0, ok: 0 }).ok += items;
        if (outcome.status === 201) this.counts.settled++;
        if (outcome.status === 202) this.counts.accepted++;
        break;
      }
      case 'rejected':
        this.counts.rejected[outcome.code] = (this.counts.rejected[outcome.code] ?? 0) + 1;
        if (!this.closed) this.cur.rejected++;
        break;
      case 'error':
        this.counts.errors[outcome.code] = (this.counts.errors[outcome.code] ?? 0) + 1;
        if (!this.closed) this.cur.errors++;
        break;
    }
  }

  /** Ends the series at the end of the window, closing the last second if it is nearly whole. */
  finish(nowMs: number): void {
    this.advance(nowMs);
    const partial = (nowMs - this.startMs) / 1000 - this.second;
    // A sliver of a second (timer jitter) would show as a spurious drop in throughput.
    if (partial > 0.5) this.closeSecond();
    this.seriesEndS = (nowMs - this.startMs) / 1000;
    this.closed = true;
  }
}

export const sumValues = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
