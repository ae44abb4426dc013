// One attempt of one delivery: check the URL, resolve and check every address of its host,
// POST the JSON body signed for this attempt over a connection pinned to those addresses, keep
// the status and the first bytes of the answer, and classify the outcome by the retry policy.
// Nothing here throws for the receiver's failings: a refusal, a network error or a timeout is
// an attempt with an error string and no status. Redirects are not followed (the spec: 3xx fails).
import { AssertionError } from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import type { Dispatcher } from 'undici';
import type { ClaimedDelivery, EndpointRow } from '../persistence/webhooks.ts';
import type { Resolver } from './address.ts';
import { checkWebhookUrl, hostOf, pinnedLookup, resolveTarget } from './address.ts';
import type { AttemptOutcome, RetryPolicy } from './retry.ts';
import { classifyAttempt } from './retry.ts';
import { signingSecrets } from './secrets.ts';
import { signedHeaders } from './signature.ts';

export const USER_AGENT = 'geopay-webhooks/1';

export interface DeliverOptions {
  timeoutMs: number;
  allowPrivate: boolean;
  resolve: Resolver;
  policy: RetryPolicy;
  /** In [0, 1), for the jitter. */
  random: () => number;
  clock: () => Date;
  excerptBytes: number;
}

export type DeliveryEndpoint = Pick<EndpointRow, 'url' | 'secret' | 'previousSecret' | 'previousSecretExpiresAt'>;
export type DeliveryAttempt = Pick<ClaimedDelivery, 'id' | 'payload' | 'cycleAttempts' | 'cycleStartedAt' | 'lastDelayMs'>;

export interface AttemptResult {
  /** When the attempt started; webhook-timestamp is its unix seconds. */
  at: Date;
  /** When it ended, by the same clock: the outcome's retry wait counts from here. */
  endedAt: Date;
  status: number | null;
  durationMs: number;
  responseExcerpt: string | null;
  error: string | null;
  outcome: AttemptOutcome;
}

interface Exchange { status: number | null; retryAfter: string | null; responseExcerpt: string | null; error: string | null }

class AttemptTimeout extends Error {}

export async function deliverOnce(endpoint: DeliveryEndpoint, delivery: DeliveryAttempt, opts: DeliverOptions): Promise<AttemptResult> {
  const at = opts.clock();
  const started = performance.now();
  const exchange = await withDeadline(opts.timeoutMs, (signal) => exchangeOnce(endpoint, delivery, at, signal, opts));
  // The duration by the monotonic clock; the schedule by the injected one (a test moves it by hand).
  const durationMs = performance.now() - started;
  const endedAt = opts.clock();
  const outcome = classifyAttempt(
    { status: exchange.status, retryAfter: exchange.retryAfter, failuresBefore: delivery.cycleAttempts, cycleStartedAt: delivery.cycleStartedAt, lastDelayMs: delivery.lastDelayMs, now: endedAt },
    opts.policy, opts.random,
  );
  return { at, endedAt, status: exchange.status, durationMs, responseExcerpt: exchange.responseExcerpt, error: exchange.error, outcome };
}

/** Runs `work` under one deadline for all of it: DNS, connect, headers and the excerpt. */
async function withDeadline(timeoutMs: number, work: (signal: AbortSignal) => Promise<Exchange>): Promise<Exchange> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new AttemptTimeout()), timeoutMs);
  try {
    return await work(controller.signal);
  } catch (err) {
    // Our own bug (a stored secret that does not parse) is not the receiver's failure: it is not recorded as an attempt.
    if (err instanceof AssertionError) throw err;
    if (controller.signal.aborted) return { status: null, retryAfter: null, responseExcerpt: null, error: `timeout: no answer within ${timeoutMs} ms` };
    return { status: null, retryAfter: null, responseExcerpt: null, error: errorText(err) };
  } finally {
    clearTimeout(timer);
  }
}

const errorText = (err: unknown): string => {
  const e = err as { code?: unknown; message?: unknown; cause?: unknown };
  const own = `${typeof e.code === 'string' ? `${e.code}: ` : ''}${String(e.message ?? err)}`;
  // undici wraps the socket's error (ECONNREFUSED, ECONNRESET) as the cause of its own.
  return e.cause instanceof Error ? `${own} (${errorText(e.cause)})` : own;
};

async function exchangeOnce(endpoint: DeliveryEndpoint, delivery: DeliveryAttempt, at: Date, signal: AbortSignal, opts: DeliverOptions): Promise<Exchange> {
  const refused = (error: string): Exchange => ({ status: null, retryAfter: null, responseExcerpt: null, error });
  const checked = checkWebhookUrl(endpoint.url, { allowPrivate: opts.allowPrivate });
  if (!checked.ok) return refused(`${checked.reason}: ${checked.detail}`);
  const target = await abortable(resolveTarget(checked.url, { allowPrivate: opts.allowPrivate, resolve: opts.resolve }), signal);
  if (!target.ok) return refused(`${target.reason}: ${target.detail}`);

  const body = JSON.stringify(delivery.payload);
  const headers = {
    ...signedHeaders(signingSecrets(endpoint, at), { id: delivery.id, timestampS: Math.floor(at.getTime() / 1000), body }),
    'content-type': 'application/json',
    'user-agent': USER_AGENT,
  };
  // One agent per attempt, so that its only lookup is the pinned one and no connection outlives it.
  const agent = new Agent({
    connect: { lookup: pinnedLookup(hostOf(checked.url), target.addresses), timeout: opts.timeoutMs },
    headersTimeout: opts.timeoutMs, bodyTimeout: opts.timeoutMs, connections: 1, pipelining: 0,
  });
  try {
    const res = await request(checked.url, { method: 'POST', headers, body, dispatcher: agent, signal });
    const retryAfter = firstHeader(res.headers['retry-after']);
    // The status decides the outcome; an answer whose body then stalls or breaks keeps it.
    const responseExcerpt = await readExcerpt(res.body, opts.excerptBytes).catch(() => null);
    return { status: res.statusCode, retryAfter, responseExcerpt, error: null };
  } finally {
    await agent.destroy().catch(() => undefined);
  }
}

const firstHeader = (v: string | string[] | undefined): string | null => (Array.isArray(v) ? (v[0] ?? null) : (v ?? null));

/** `work`, or the signal's abort: dns.lookup cannot be cancelled, only stopped being waited for. */
function abortable<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** At most `limit` bytes of the body as text (a character cut at the limit becomes U+FFFD); the rest is discarded. */
async function readExcerpt(body: Dispatcher.ResponseData['body'], limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  if (limit > 0) {
    for await (const chunk of body) {
      const bytes = chunk as Buffer;
      chunks.push(bytes.subarray(0, limit - size));
      size += Math.min(bytes.length, limit - size);
      if (size >= limit) break;
    }
  }
  if (!body.destroyed) body.destroy();
  return new TextDecoder().decode(Buffer.concat(chunks));
}
