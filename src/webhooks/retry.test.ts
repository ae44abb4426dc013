// The retry policy: which statuses succeed, disable or retry; the backoff ceiling grows and
// caps; both jitters stay in their bounds (fast-check, seed in the failure message); the
// horizon ends the retries; Retry-After in seconds or as an HTTP date delays the next attempt.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { AttemptFacts, RetryPolicy } from './retry.ts';
import { DEFAULT_RETRY_POLICY, backoffCeilingMs, backoffDelayMs, classifyAttempt, parseRetryAfter } from './retry.ts';

const start = new Date('2030-03-01T00:00:00Z');
const policy: RetryPolicy = { baseDelayMs: 1_000, maxDelayMs: 60_000, horizonMs: 3_600_000, jitter: 'full' };
const facts = (over: Partial<AttemptFacts> = {}): AttemptFacts => ({ status: 500, retryAfter: null, failuresBefore: 0, cycleStartedAt: start, lastDelayMs: null, now: start, ...over });
const half = () => 0.5;
const almostOne = () => 0.999_999;

describe('classifyAttempt', () => {
  it('counts only 2xx as delivered and disables on 410', () => {
    for (const status of [200, 201, 204, 299]) expect(classifyAttempt(facts({ status }), policy, half)).toEqual({ kind: 'delivered' });
    expect(classifyAttempt(facts({ status: 410 }), policy, half)).toEqual({ kind: 'disable' });
  });

  it('retries 3xx, other 4xx, 5xx and no response at all', () => {
    for (const status of [199, 300, 301, 304, 400, 401, 404, 409, 429, 500, 502, 503, 504, null]) {
      expect(classifyAttempt(facts({ status }), policy, half), String(status)).toEqual({ kind: 'retry', at: new Date(start.getTime() + 500) });
    }
  });

  it('gives up when the next attempt would fall after the horizon, and retries when it falls exactly on it', () => {
    // floor(0.999999 * 60 s) = 59,999 ms: one ms past the horizon.
    const late = new Date(start.getTime() + policy.horizonMs - 59_998);
    expect(classifyAttempt(facts({ now: late, failuresBefore: 20 }), policy, almostOne)).toEqual({ kind: 'give_up' });
    const onIt = classifyAttempt(facts({ now: new Date(start.getTime() + policy.horizonMs - 30_000), failuresBefore: 20 }), policy, half);
    expect(onIt).toEqual({ kind: 'retry', at: new Date(start.getTime() + policy.horizonMs) });
    expect(classifyAttempt(facts({ now: new Date(start.getTime() + policy.horizonMs + 1) }), policy, () => 0)).toEqual({ kind: 'give_up' });
  });

  it('waits at least Retry-After (seconds) on 429/502/503/504, never less than the backoff, and ignores it elsewhere', () => {
    for (const status of [429, 502, 503, 504]) {
      expect(classifyAttempt(facts({ status, retryAfter: '120' }), policy, half), String(status)).toEqual({ kind: 'retry', at: new Date(start.getTime() + 120_000) });
    }
    expect(classifyAttempt(facts({ status: 500, retryAfter: '120' }), policy, half)).toEqual({ kind: 'retry', at: new Date(start.getTime() + 500) });
    // Retry-After: 0 does not undercut the backoff (no busy loop on a hostile receiver).
    expect(classifyAttempt(facts({ status: 503, retryAfter: '0', failuresBefore: 3 }), policy, half)).toEqual({ kind: 'retry', at: new Date(start.getTime() + 4_000) });
    expect(classifyAttempt(facts({ status: 503, retryAfter: 'soon' }), policy, half)).toEqual({ kind: 'retry', at: new Date(start.getTime() + 500) });
  });

  it('honours Retry-After as an HTTP date, and gives up when it points past the horizon', () => {
    const inTwoMinutes = new Date(start.getTime() + 120_000).toUTCString();
    expect(classifyAttempt(facts({ status: 503, retryAfter: inTwoMinutes }), policy, half)).toEqual({ kind: 'retry', at: new Date(start.getTime() + 120_000) });
    const pastHorizon = new Date(start.getTime() + policy.horizonMs + 1_000).toUTCString();
    expect(classifyAttempt(facts({ status: 429, retryAfter: pastHorizon }), policy, half)).toEqual({ kind: 'give_up' });
    expect(classifyAttempt(facts({ status: 429, retryAfter: String(policy.horizonMs / 1000 + 1) }), policy, half)).toEqual({ kind: 'give_up' });
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('Sun, 06 Nov 1994 08:49:37 GMT');
  it('reads delay-seconds and the three HTTP-date forms; a past date is 0; junk is undefined', () => {
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Sun, 06 Nov 1994 08:49:47 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('Sunday, 06-Nov-94 08:49:47 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('Sun Nov  6 08:49:47 1994', now)).toBeGreaterThanOrEqual(0);
    expect(parseRetryAfter('Sun, 06 Nov 1994 08:00:00 GMT', now)).toBe(0);
    for (const bad of [undefined, null, '', '-5', '1.5', '1 2', 'soon', 'Sun, 99 Foo 1994']) expect(parseRetryAfter(bad, now), String(bad)).toBeUndefined();
  });
});

describe('backoff', () => {
  it('has a ceiling that doubles from the base, is monotone and stops at the cap', () => {
    const ceilings = Array.from({ length: 60 }, (_, i) => backoffCeilingMs(policy, i + 1));
    expect(ceilings.slice(0, 8)).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
    for (let i = 1; i < ceilings.length; i++) expect(ceilings[i]!).toBeGreaterThanOrEqual(ceilings[i - 1]!);
    expect(ceilings[59]).toBe(60_000);
  });

  it('schedules monotonically later attempts for a fixed draw, each after now', () => {
    let at = start.getTime();
    let previous = -1;
    for (let failures = 0; failures < 30; failures++) {
      const o = classifyAttempt(facts({ now: new Date(at), failuresBefore: failures }), { ...DEFAULT_RETRY_POLICY }, half);
      if (o.kind !== 'retry') break;
      const delay = o.at.getTime() - at;
      expect(delay).toBeGreaterThanOrEqual(previous);
      previous = delay;
      at = o.at.getTime();
    }
    expect(previous).toBe(DEFAULT_RETRY_POLICY.maxDelayMs / 2);
  });

  it('keeps full jitter in [0, ceiling) and decorrelated jitter in [base, min(cap, 3 * previous))', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 100 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.option(fc.integer({ min: 0, max: 200_000 })), (failures, r, previous) => {
      const full = backoffDelayMs(policy, failures, previous, () => r);
      expect(full).toBeGreaterThanOrEqual(0);
      expect(full).toBeLessThan(Math.max(1, backoffCeilingMs(policy, failures)));
      const decorrelated = backoffDelayMs({ ...policy, jitter: 'decorrelated' }, failures, previous, () => r);
      const prev = Math.max(policy.baseDelayMs, previous ?? policy.baseDelayMs);
      expect(decorrelated).toBeGreaterThanOrEqual(policy.baseDelayMs);
      expect(decorrelated).toBeLessThanOrEqual(Math.min(policy.maxDelayMs, 3 * prev));
    }), { seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31) });
  });

  it('lets the decorrelated wait grow from the previous one', () => {
    const p: RetryPolicy = { ...policy, jitter: 'decorrelated' };
    expect(backoffDelayMs(p, 1, null, almostOne)).toBe(2_999);
    expect(backoffDelayMs(p, 2, 2_999, almostOne)).toBe(8_996);
    expect(backoffDelayMs(p, 9, 50_000, almostOne)).toBe(60_000);
    expect(backoffDelayMs(p, 9, 50_000, () => 0)).toBe(1_000);
  });

  it('refuses a random() outside [0, 1)', () => {
    expect(() => backoffDelayMs(policy, 1, null, () => 1)).toThrow();
  });
});
