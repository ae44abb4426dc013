// The ops page's windowed figures: the increase over a window, per-second rates, and the
// quantile estimate from bucket increases (histogram_quantile's), checked by hand-computed
// cases and by properties over random histograms; and the sampler over a real prom-client registry.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Metrics } from './metrics.ts';
import { MetricsSampler } from './sampler.ts';
import type { Sample } from './window.ts';
import { SampleRing, mergeBuckets, quantile, ratePerS, windowDelta } from './window.ts';

const BOUNDS = [0.01, 0.1, 1];

/** A sample at `atS` seconds with `transfers` so far and cumulative latency counts per bound, then +Inf. */
function sample(atS: number, transfers: number, cumulative: number[] = [0, 0, 0, 0]): Sample {
  return { atMs: atS * 1_000, transfers, latency: new Map([...BOUNDS, Infinity].map((b, i) => [b, cumulative[i]!])) };
}

describe('windowDelta and ratePerS', () => {
  it('needs two samples', () => {
    expect(windowDelta([], 10_000)).toBeUndefined();
    expect(windowDelta([sample(0, 5)], 10_000)).toBeUndefined();
  });

  it('measures from the newest sample at least the window before the latest', () => {
    // 13 samples a second apart, 5 transfers a second, 2 requests a second in the 0.1 s bucket.
    const samples = Array.from({ length: 13 }, (_, t) => sample(t, 5 * t, [0, 2 * t, 2 * t, 2 * t]));
    const d = windowDelta(samples, 10_000)!;
    expect(d.seconds).toBe(10);
    expect(d.transfers).toBe(50);
    expect(ratePerS(d)).toBe(5);
    expect(d.bounds).toEqual(BOUNDS);
    expect(d.counts).toEqual([0, 20, 20, 20]);
  });

  it('says how short the window is just after start', () => {
    const d = windowDelta([sample(0, 0), sample(1, 3), sample(2, 8)], 10_000)!;
    expect(d.seconds).toBe(2);
    expect(ratePerS(d)).toBe(4);
  });

  it('takes a counter that went down (a reset) as no increase, never a negative rate', () => {
    const d = windowDelta([sample(0, 100, [5, 5, 5, 5]), sample(1, 3, [1, 1, 1, 1])], 10_000)!;
    expect(d.transfers).toBe(0);
    expect(d.counts).toEqual([0, 0, 0, 0]);
  });

  it('reads a bucket the base sample did not have yet as starting from 0', () => {
    const base: Sample = { atMs: 0, transfers: 0, latency: new Map() };
    const d = windowDelta([base, sample(2, 4, [1, 3, 4, 4])], 10_000)!;
    expect(d.counts).toEqual([1, 3, 4, 4]);
  });

  it('the ring keeps the last samples, oldest first', () => {
    const ring = new SampleRing(3);
    for (let t = 0; t < 5; t++) ring.push(sample(t, t));
    expect(ring.samples().map((s) => s.transfers)).toEqual([2, 3, 4]);
    expect(() => new SampleRing(1)).toThrow(RangeError);
  });
});

describe('quantile', () => {
  // 50 requests under 10 ms, 40 between 10 and 100 ms, 10 between 100 ms and 1 s.
  const buckets = { bounds: BOUNDS, counts: [50, 90, 100, 100] };

  it('interpolates within the bucket that holds the rank, the first one starting at 0', () => {
    expect(quantile(0.5, buckets)).toBeCloseTo(0.01, 12);
    expect(quantile(0.25, buckets)).toBeCloseTo(0.005, 12);
    expect(quantile(0.9, buckets)).toBeCloseTo(0.1, 12);
    // Rank 99 is the 9th of 10 in (0.1, 1]: 0.1 + 0.9 * 9/10.
    expect(quantile(0.99, buckets)).toBeCloseTo(0.91, 12);
  });

  it('answers the highest finite bound when the rank is in +Inf, and null without observations', () => {
    expect(quantile(0.99, { bounds: BOUNDS, counts: [0, 0, 98, 100] })).toBe(1);
    expect(quantile(0.99, { bounds: BOUNDS, counts: [0, 0, 0, 0] })).toBeNull();
    expect(quantile(0.99, { bounds: [], counts: [7] })).toBeNull();
  });

  it('refuses a q outside 0..1 and counts that do not match the bounds', () => {
    expect(() => quantile(1.5, buckets)).toThrow(RangeError);
    expect(() => quantile(0.5, { bounds: BOUNDS, counts: [1, 2] })).toThrow(RangeError);
  });

  it('is monotone in q and lies within the bucket that holds the rank (random histograms)', () => {
    const histogram = fc.array(fc.nat(1_000), { minLength: 4, maxLength: 4 }).filter((xs) => xs.some((x) => x > 0));
    fc.assert(fc.property(histogram, fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), (perBucket, q1, q2) => {
      const counts = perBucket.map((_, i) => perBucket.slice(0, i + 1).reduce((a, b) => a + b, 0));
      const b = { bounds: BOUNDS, counts };
      const [lo, hi] = q1 <= q2 ? [q1, q2] : [q2, q1];
      const vLo = quantile(lo, b)!;
      const vHi = quantile(hi, b)!;
      expect(vLo).toBeLessThanOrEqual(vHi + 1e-12);
      const rank = hi * counts.at(-1)!;
      const i = counts.findIndex((c) => c >= rank);
      const lower = i === 0 ? 0 : BOUNDS[i - 1]!;
      const upper = BOUNDS[Math.min(i, BOUNDS.length - 1)]!;
      expect(vHi).toBeGreaterThanOrEqual(Math.min(lower, upper) - 1e-12);
      expect(vHi).toBeLessThanOrEqual(upper + 1e-12);
    }), { seed: 20240613 });
  });
});

describe('mergeBuckets', () => {
  it('adds up the nodes with the same bounds and leaves out the others', () => {
    const merged = mergeBuckets([
      { bounds: BOUNDS, counts: [1, 2, 3, 3] },
      { bounds: [], counts: [0] },
      { bounds: BOUNDS, counts: [0, 5, 5, 6] },
      { bounds: [0.5], counts: [9, 9] },
    ]);
    expect(merged).toEqual({ bounds: BOUNDS, counts: [1, 7, 8, 9] });
    expect(mergeBuckets([{ bounds: [], counts: [0] }])).toBeUndefined();
  });
});

describe('MetricsSampler', () => {
  it('reads money movements and the money routes\' latency from a node\'s registry, nothing else', async () => {
    const metrics = new Metrics({ node: 'n1', region: 'eu' });
    let now = 0;
    const sampler = new MetricsSampler(metrics, { now: () => now });
    await sampler.sample();
    const http = (route: string, seconds: number, method = 'POST') =>
      metrics.httpDuration.observe({ route, method, status_class: '2xx' }, seconds);
    metrics.transfers.inc({ kind: 'transfer', outcome: 'settled' }, 30);
    metrics.transfers.inc({ kind: 'deposit', outcome: 'settled' }, 10);
    for (let i = 0; i < 99; i++) http('/v1/transfers', 0.004);
    http('/v1/holds/:id/capture', 0.2);
    // Not money routes: a read, and a POST that moves nothing.
    http('/v1/transfers/:id', 3, 'GET');
    http('/v1/accounts', 4);
    now = 4_000;
    await sampler.sample();

    const d = sampler.delta(10_000)!;
    expect(d.seconds).toBe(4);
    expect(ratePerS(d)).toBe(10);
    expect(d.counts.at(-1)).toBe(100);
    // 99 of 100 at 4 ms, in (2.5 ms, 5 ms]: the 99th is the last of them.
    expect(quantile(0.99, d)).toBeCloseTo(0.005, 9);
    expect(quantile(1, d)).toBeCloseTo(0.25, 9);
  });
});
