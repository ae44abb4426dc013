// Reads this node's own counters once a second into a short ring, so that the ops page can
// show transfers/s and p99 over the last seconds without a Prometheus server: the money
// movements acknowledged (geopay_transfers_total, every kind and outcome) and the latency of
// the routes that move money (geopay_http_request_duration_seconds). ./window.ts does the math.
import type { Metrics } from './metrics.ts';
import type { Sample, WindowDelta } from './window.ts';
import { SampleRing, windowDelta } from './window.ts';

/** The routes whose latency is the page's p99: those that move or reserve money (route templates, as labelled). */
export const MONEY_ROUTES: ReadonlySet<string> = new Set([
  '/v1/deposits', '/v1/withdrawals', '/v1/transfers', '/v1/transfers/batch', '/v1/transfers/:id/refunds',
  '/v1/holds', '/v1/holds/:id/capture', '/v1/holds/:id/void', '/v1/suspense/:id/payouts',
]);

export interface SamplerOptions {
  intervalMs: number;
  /** Samples kept: a little more than the longest window asked for, in intervals. */
  capacity: number;
  now: () => number;
}

const DEFAULTS: SamplerOptions = { intervalMs: 1_000, capacity: 15, now: Date.now };

export class MetricsSampler {
  private readonly ring: SampleRing;
  private readonly opts: SamplerOptions;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly metrics: Pick<Metrics, 'transfers' | 'httpDuration'>, opts: Partial<SamplerOptions> = {}) {
    this.opts = { ...DEFAULTS, ...opts };
    this.ring = new SampleRing(this.opts.capacity);
  }

  /** Samples now and every interval; the timer never keeps the process alive. */
  start(): void {
    if (this.timer) return;
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  async sample(): Promise<void> {
    const atMs = this.opts.now();
    const [transfers, latency] = await Promise.all([this.metrics.transfers.get(), this.metrics.httpDuration.get()]);
    this.ring.push({ atMs, transfers: transfers.values.reduce((n, v) => n + v.value, 0), latency: moneyBuckets(latency.values) });
  }

  /** The increase over the last `windowMs` (shorter just after start); undefined before two samples. */
  delta(windowMs: number): WindowDelta | undefined {
    return windowDelta(this.ring.samples(), windowMs);
  }
}

interface HistogramValue { value: number; metricName?: string; labels: Partial<Record<string, string | number>> }

/** Cumulative bucket counts of the money routes, summed over route, method and status class. */
function moneyBuckets(values: readonly HistogramValue[]): Sample['latency'] {
  const out = new Map<number, number>();
  for (const v of values) {
    const { le, route, method } = v.labels;
    if (!v.metricName?.endsWith('_bucket') || method !== 'POST' || typeof route !== 'string' || !MONEY_ROUTES.has(route)) continue;
    const bound = le === '+Inf' ? Infinity : Number(le);
    if (Number.isNaN(bound)) continue;
    out.set(bound, (out.get(bound) ?? 0) + v.value);
  }
  return out;
}
