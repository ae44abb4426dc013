// The load generator's HTTP client: one undici Pool of keep-alive connections, a client-side
// timeout per attempt, and bounded retries of what the API documents as safe to retry (503,
// 409 idempotency_key_in_progress, no answer at all) with the same key and byte-identical
// body. Every attempt of a POST is written to the request log.
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import type { RequestLog } from './request-log.ts';
import type { Outcome } from './stats.ts';

export interface ClientOptions {
  url: string;
  /** Keep-alive connections to the server; requests beyond them queue in the pool. */
  connections: number;
  /** Per attempt, queueing in the pool included: a client gives up on a silent server. */
  timeoutMs: number;
  /** Attempts after the first, at most. */
  retries: number;
  /** Where every attempt is recorded: a RequestLog file, or a run's own sink. */
  log: Pick<RequestLog, 'write'> | undefined;
  run: string;
  engine: string;
}

export interface PostResult {
  outcome: Outcome;
  status: number | null;
  answer: unknown;
  attempts: number;
  /** The last answer's Retry-After, seconds, when it had one. */
  retryAfterS?: number;
}

interface Answer {
  status: number | null;
  answer: unknown;
  error: string | undefined;
  retryAfterS?: number;
}

/** 422 codes that are business outcomes: the request was valid, nothing moved. */
const BUSINESS = new Set([
  'insufficient_funds', 'currency_mismatch', 'same_account', 'account_frozen', 'account_closed',
  'balance_out_of_range', 'balance_not_zero',
]);

/** Longest pause before a retry: Retry-After is honoured up to this. */
const MAX_BACKOFF_MS = 2_000;

export class LoadClient {
  readonly pool: Pool;
  private closed = false;

  constructor(private readonly opts: ClientOptions) {
    this.pool = new Pool(opts.url, {
      connections: opts.connections,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      keepAliveMaxTimeout: 600_000,
      // The per-attempt AbortSignal bounds the whole request; these only catch a stuck socket.
      headersTimeout: opts.timeoutMs * 2,
      bodyTimeout: opts.timeoutMs * 2,
    });
  }

  /**
   * POST with an Idempotency-Key; retries reuse `key` and the exact bytes of `body`.
   * `onRetry` lets the caller count retries as they happen.
   */
  async post(
    req: { op: string; path: string; body: unknown; key: string; bearer: string; tenant: string; phase: string },
    onRetry?: () => void,
    /** Overrides the client's retry bound (setup must get through an overloaded account). */
    retries = this.opts.retries,
  ): Promise<PostResult> {
    // Serialised once: every attempt sends the same bytes. No body, no content-type (fastify
    // refuses an empty body declared as JSON).
    const payload = req.body === undefined ? undefined : JSON.stringify(req.body);
    let last: Answer = { status: null, answer: null, error: undefined };
    let attempt = 0;
    for (;;) {
      attempt++;
      const sentAt = new Date();
      const t0 = performance.now();
      last = await this.attempt('POST', req.path, payload, {
        authorization: `Bearer ${req.bearer}`,
        ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
        'idempotency-key': req.key,
      });
      this.opts.log?.write({
        ts: sentAt.toISOString(), run: this.opts.run, phase: req.phase, engine: this.opts.engine, tenant: req.tenant,
        op: req.op, method: 'POST', path: req.path, key: req.key, body: req.body ?? null, attempt,
        status: last.status, ...(last.error ? { error: last.error } : {}), answer: redact(req.path, last.answer),
        ms: Math.round((performance.now() - t0) * 1000) / 1000,
      });
      const retryIn = this.retryDelayMs(last.status, last.answer, last.retryAfterS, attempt);
      if (retryIn === undefined || attempt > retries || this.closed) break;
      onRetry?.();
      await sleep(retryIn);
    }
    const retryAfter = last.retryAfterS === undefined ? {} : { retryAfterS: last.retryAfterS };
    return { outcome: classify(last.status, last.answer, last.error), status: last.status, answer: last.answer, attempts: attempt, ...retryAfter };
  }

  /** GET without retries (probes and reads). */
  async get(path: string, bearer?: string): Promise<Answer> {
    return this.attempt('GET', path, undefined, bearer ? { authorization: `Bearer ${bearer}` } : {});
  }

  /** PUT of a JSON body, once (a PUT replaces: the caller may simply repeat it). */
  async put(path: string, body: unknown, bearer: string): Promise<Answer> {
    return this.attempt('PUT', path, JSON.stringify(body), { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' });
  }

  private retryDelayMs(status: number | null, answer: unknown, retryAfterS: number | undefined, attempt: number): number | undefined {
    const retryable = status === null || status === 503 || (status === 409 && codeOf(answer) === 'idempotency_key_in_progress');
    if (!retryable) return undefined;
    const backoff = Math.min(MAX_BACKOFF_MS, 50 * 2 ** (attempt - 1));
    return retryAfterS !== undefined ? Math.min(MAX_BACKOFF_MS, Math.max(backoff, retryAfterS * 1000)) : backoff;
  }

  private async attempt(
    method: 'GET' | 'POST' | 'PUT',
    path: string,
    payload: string | undefined,
    headers: Record<string, string>,
  ): Promise<Answer> {
    try {
      const res = await this.pool.request({
        method, path, headers, body: payload, signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      const text = await res.body.text();
      const type = String(res.headers['content-type'] ?? '');
      let answer: unknown = text;
      if (type.includes('json') && text !== '') {
        try { answer = JSON.parse(text); } catch { /* keep the text: a broken body is evidence */ }
      }
      const ra = Number(res.headers['retry-after']);
      return { status: res.statusCode, answer, error: undefined, ...(Number.isFinite(ra) && ra >= 0 ? { retryAfterS: ra } : {}) };
    } catch (err) {
      const e = err as { name?: string; code?: string; message?: string };
      const error = e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT'
        ? 'timeout'
        : e.code ?? e.name ?? 'request_failed';
      return { status: null, answer: null, error };
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.pool.close().catch(() => this.pool.destroy());
  }

  /** Drops connections at once, with requests in flight (the run is over or the server died). */
  async destroy(): Promise<void> {
    this.closed = true;
    await this.pool.destroy();
  }
}

export function codeOf(answer: unknown): string | undefined {
  if (answer && typeof answer === 'object' && typeof (answer as { code?: unknown }).code === 'string') {
    return (answer as { code: string }).code;
  }
  return undefined;
}

export function classify(status: number | null, answer: unknown, error: string | undefined): Outcome {
  if (status === null) return { kind: 'error', code: error ?? 'no_answer' };
  if (status >= 200 && status < 300) return { kind: 'ok', status };
  const code = codeOf(answer);
  if (status === 422 && code !== undefined && BUSINESS.has(code)) return { kind: 'rejected', code };
  return { kind: 'error', code: `${status}${code ? ` ${code}` : ''}` };
}

/** A tenant key is shown once in its creation answer; it has no place in a log file. */
function redact(path: string, answer: unknown): unknown {
  if (/\/keys$/.test(path) && answer && typeof answer === 'object' && 'key' in answer) {
    return { ...(answer as object), key: '[redacted]' };
  }
  return answer;
}
