// The retry policy, pure: what one attempt's outcome means for its delivery and, on a failure,
// when the next attempt is due. Time and randomness come in as arguments. Exponential backoff
// with jitter (full or decorrelated: AWS Architecture Blog, "Exponential Backoff And Jitter"),
// within a horizon counted from the start of the delivery's cycle (its enqueue, or its last
// manual redelivery). Status handling follows the spec's "Delivery success and failure".
import assert from 'node:assert/strict';

export type Jitter = 'full' | 'decorrelated';

export interface RetryPolicy {
  /** The first retry's ceiling (full) or floor (decorrelated). */
  baseDelayMs: number;
  /** No wait between two attempts is longer. */
  maxDelayMs: number;
  /** No attempt is scheduled later than this after the cycle started: the delivery fails instead. */
  horizonMs: number;
  jitter: Jitter;
}

/**
 * 5 s, doubling to at most 12 h, for 3 days: about the spec's example schedule (5 s ... 24 h,
 * 75 h in all), with random jitter so that endpoints failing together do not retry together.
 */
export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  baseDelayMs: 5_000,
  maxDelayMs: 12 * 3_600_000,
  horizonMs: 3 * 86_400_000,
  jitter: 'full',
});

export type AttemptOutcome =
  | { kind: 'delivered' }
  | { kind: 'retry'; at: Date }
  | { kind: 'disable' }
  | { kind: 'give_up' };

/** Statuses whose Retry-After is honoured: rate limited, or the receiver's gateway overloaded. */
const THROTTLING = new Set([429, 502, 503, 504]);
/** Bounds a failure count so that 2^n stays finite; the cap is reached long before. */
const MAX_EXPONENT = 40;

export function assertPolicy(p: RetryPolicy): void {
  assert.ok(Number.isFinite(p.baseDelayMs) && p.baseDelayMs > 0, 'baseDelayMs > 0');
  assert.ok(Number.isFinite(p.maxDelayMs) && p.maxDelayMs >= p.baseDelayMs, 'maxDelayMs >= baseDelayMs');
  assert.ok(Number.isFinite(p.horizonMs) && p.horizonMs > 0, 'horizonMs > 0');
}

/** The un-jittered wait after the `failures`-th failure of a cycle: base * 2^(failures-1), capped. */
export function backoffCeilingMs(p: RetryPolicy, failures: number): number {
  assert.ok(Number.isInteger(failures) && failures >= 1, 'failures counts from 1');
  return Math.min(p.maxDelayMs, p.baseDelayMs * 2 ** (Math.min(failures, MAX_EXPONENT) - 1));
}

/**
 * The wait before the next attempt. full: uniform in [0, ceiling). decorrelated: uniform in
 * [base, 3 * previous wait), capped; the first wait counts as base. `random` is in [0, 1).
 */
export function backoffDelayMs(p: RetryPolicy, failures: number, previousDelayMs: number | null, random: () => number): number {
  const r = random();
  assert.ok(r >= 0 && r < 1, 'random() is in [0, 1)');
  if (p.jitter === 'full') return Math.floor(r * backoffCeilingMs(p, failures));
  const previous = Math.max(p.baseDelayMs, previousDelayMs ?? p.baseDelayMs);
  return Math.floor(Math.min(p.maxDelayMs, p.baseDelayMs + r * (3 * previous - p.baseDelayMs)));
}

/**
 * Retry-After as a wait in ms from `nowMs`: delay-seconds or an HTTP-date (RFC 9110 10.2.3);
 * a date in the past is 0. Undefined when absent or malformed (then only the backoff counts).
 */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  if (/^[0-9]{1,10}$/.test(v)) return Number(v) * 1000;
  // An HTTP-date always names a weekday or a month; a bare Date.parse would take "1 2" too.
  if (!/[A-Za-z]{3}/.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

export interface AttemptFacts {
  /** The response status; null when none came (network error, timeout, address refused). */
  status: number | null;
  /** The response's Retry-After header, if any. */
  retryAfter: string | null;
  /** Failed attempts of this cycle before this one. */
  failuresBefore: number;
  cycleStartedAt: Date;
  /** The wait before this attempt, as scheduled (decorrelated jitter grows from it). */
  lastDelayMs: number | null;
  /** When the attempt ended: the next one is scheduled from here. */
  now: Date;
}

/**
 * One attempt's outcome. 2xx: delivered; 410: disable the endpoint; anything else (3xx, other
 * 4xx and 5xx, no response) is retried. On 429/502/503/504 the next attempt waits at least
 * what Retry-After asks: the later of it and the backoff, so a receiver is never called before
 * it asked and a `Retry-After: 0` cannot turn the backoff into a busy loop. An attempt that
 * would fall after the horizon is not scheduled: the delivery gives up.
 */
export function classifyAttempt(f: AttemptFacts, p: RetryPolicy, random: () => number): AttemptOutcome {
  if (f.status !== null && f.status >= 200 && f.status <= 299) return { kind: 'delivered' };
  if (f.status === 410) return { kind: 'disable' };
  const nowMs = f.now.getTime();
  let delayMs = backoffDelayMs(p, f.failuresBefore + 1, f.lastDelayMs, random);
  if (f.status !== null && THROTTLING.has(f.status)) delayMs = Math.max(delayMs, parseRetryAfter(f.retryAfter, nowMs) ?? 0);
  const atMs = nowMs + delayMs;
  return atMs > f.cycleStartedAt.getTime() + p.horizonMs ? { kind: 'give_up' } : { kind: 'retry', at: new Date(atMs) };
}
