// Node-to-node forwarding of account requests to the internal listener of the shard's owner,
// each request signed with the cluster secret (./signature.ts), with a bounded number of hops
// and a bounded wait. An owner that cannot be reached answers shard_unavailable (503,
// Retry-After): the caller retries, nobody guesses.
import type { ForwardOutcome, Metrics } from '../observability/metrics.ts';
import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import type { Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { GeopayError } from '../domain/errors.ts';
import type { AccountId, Region } from '../domain/ids.ts';
import type { RegionRead } from '../persistence/repositories.ts';
import type { AccountRequest, CommandResult } from '../actors/protocol.ts';
import { decodeResultWithOutcome, decodeState, decodeValue, encodeRequest, encodeValue } from '../actors/wire.ts';
import { signForward } from './signature.ts';
import type { TraceContext } from '../observability/trace.ts';
import { TRACEPARENT_HEADER, childTraceparent } from '../observability/trace.ts';

export const MAX_HOPS = 2;

/**
 * The requests of this node that wait for a transfer's outcome (the saga's): a debit forwarded
 * for one of them asks its owner to answer with the outcome, and what comes back is told here.
 * `outcome` undefined: the owner waited and none came.
 */
export interface OutcomeWaiters {
  waits(transferId: string): boolean;
  heard(transferId: string, outcome: unknown): void;
}

export class Forwarder {
  private readonly peers = new Map<string, Pool>();
  private waiters: OutcomeWaiters | undefined;

  constructor(private readonly opts: { secret: string; timeoutMs: number; logger: Logger; metrics?: Pick<Metrics, 'forwarded'>; outcomeWaitMs?: number }) {}

  /** Set once the saga exists (it is built after the forwarder): a debit forwarded for one of its waiters comes back with the outcome. */
  tellOutcomesTo(w: OutcomeWaiters): void {
    this.waiters = w;
  }

  /** The transfer a request creates, when someone here waits for its outcome. */
  private awaited(req: AccountRequest): string | undefined {
    const id = req.transfer ? req.idem?.resourceId : undefined;
    return id && this.opts.outcomeWaitMs && this.waiters?.waits(id) ? id : undefined;
  }

  /** 96 random bits drawn once, then a counter: never repeated by this process, and no CSPRNG call per request. */
  private readonly noncePrefix = randomBytes(12).toString('base64url');
  private nonces = 0;

  private nonce(): string {
    return `${this.noncePrefix}${(this.nonces++).toString(36)}`;
  }

  private peer(url: string): Pool {
    let p = this.peers.get(url);
    if (!p) {
      p = new Pool(url, { connections: 32, keepAliveTimeout: 30_000, headersTimeout: this.opts.timeoutMs, bodyTimeout: this.opts.timeoutMs });
      this.peers.set(url, p);
    }
    return p;
  }

  /**
   * Signed now, under a fresh nonce: the owner refuses it once replayed or out of its window.
   * The hop's traceparent rides beside the signature, outside it (src/cluster/signature.ts says why).
   */
  private signed(url: string, method: 'GET' | 'POST', path: string, body: string, trace: TraceContext | undefined, hops?: string): Record<string, string> {
    const request = { audience: url, method, path, body, ...(hops === undefined ? {} : { hops }) };
    const headers = signForward(this.opts.secret, request, Date.now(), this.nonce());
    if (trace) headers[TRACEPARENT_HEADER] = childTraceparent(trace);
    return headers;
  }

  async send(url: string, id: AccountId, req: AccountRequest, at: string, hops: number, trace?: TraceContext): Promise<CommandResult> {
    if (hops >= MAX_HOPS) return { type: 'error', error: new GeopayError('shard_unavailable', 'too many forwarding hops') };
    // The owner answers a debit someone here waits for once its transfer settled (or a bounded
    // wait passed), with the outcome: no notice to listen for, no row to poll.
    const awaited = this.awaited(req);
    const awaitOutcomeMs = awaited ? this.opts.outcomeWaitMs : undefined;
    try {
      const path = `/internal/v1/accounts/${encodeURIComponent(id)}/commands`;
      const body = encodeRequest({ req, at, hops: hops + 1, ...(awaitOutcomeMs ? { awaitOutcomeMs } : {}) });
      const res = await this.peer(url).request({
        path,
        method: 'POST',
        headers: { 'content-type': 'application/json', ...this.signed(url, 'POST', path, body, trace) },
        body,
        ...(awaitOutcomeMs ? { headersTimeout: this.opts.timeoutMs + awaitOutcomeMs } : {}),
      });
      const text = await res.body.text();
      this.count(res.statusCode === 200 ? 'ok' : 'error');
      if (res.statusCode !== 200) return { type: 'error', error: new GeopayError('shard_unavailable', `owner answered ${res.statusCode}`) };
      const { result, outcome } = decodeResultWithOutcome(text);
      if (awaited) this.waiters!.heard(awaited, outcome ?? undefined);
      return result;
    } catch (err) {
      this.opts.logger.warn({ err, url, account: id, trace: trace?.traceId }, 'forward to owner failed');
      // Sent but unanswered: the command may have run. Say so; the client retries with its key.
      const code = (err as { code?: string }).code ?? '';
      if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_SOCKET') {
        this.count('timeout');
        return { type: 'error', error: new GeopayError('request_timeout', 'the owner did not answer in time', { cause: err }) };
      }
      this.count('unreachable');
      return { type: 'error', error: new GeopayError('shard_unavailable', 'the owner of this account is unreachable', { cause: err }) };
    }
  }

  private count(outcome: ForwardOutcome): void {
    this.opts.metrics?.forwarded.inc({ outcome });
  }

  /** The committed state of an account at its owner. */
  async read(url: string, id: AccountId, hops: number, trace?: TraceContext): Promise<{ state: unknown } | { error: GeopayError }> {
    if (hops >= MAX_HOPS) return { error: new GeopayError('shard_unavailable', 'too many forwarding hops') };
    try {
      const path = `/internal/v1/accounts/${encodeURIComponent(id)}/state`;
      const res = await this.peer(url).request({ path, method: 'GET', headers: this.signed(url, 'GET', path, '', trace, String(hops + 1)) });
      const text = await res.body.text();
      this.count(res.statusCode === 200 || res.statusCode === 404 ? 'ok' : 'error');
      if (res.statusCode !== 200) return { error: new GeopayError(res.statusCode === 404 ? 'account_not_found' : 'shard_unavailable', `owner answered ${res.statusCode}`) };
      return { state: decodeState(text) };
    } catch (err) {
      this.count('unreachable');
      return { error: new GeopayError('shard_unavailable', 'the owner of this account is unreachable', { cause: err }) };
    }
  }

  /**
   * A read of a region's database at a node that reads it (src/payments/region-reads.ts).
   * Unreachable, or answered with an error: region_unavailable, retryable.
   */
  async regionRead(url: string, region: Region, op: RegionRead, args: unknown[]): Promise<unknown> {
    const path = `/internal/v1/regions/${encodeURIComponent(region)}/reads`;
    const body = encodeValue({ op, args });
    let res: Dispatcher.ResponseData;
    try {
      res = await this.peer(url).request({ path, method: 'POST', headers: { 'content-type': 'application/json', ...this.signed(url, 'POST', path, body, undefined) }, body });
    } catch (err) {
      throw new GeopayError('region_unavailable', `no answer from a node of region ${region}`, { cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new GeopayError('region_unavailable', `a node of region ${region} answered ${res.statusCode}`);
    return decodeValue(text);
  }

  /**
   * A peer's figures for the ops page (its JSON, unread), within `timeoutMs` whatever the
   * forwarding timeout: the page shows a slow peer as unreachable rather than wait for it. Not
   * counted in geopay_forwarded_requests_total, which is about account requests.
   */
  async opsSummary(url: string, timeoutMs: number): Promise<{ body: unknown } | { error: string }> {
    const path = '/internal/v1/ops/summary';
    try {
      const res = await this.peer(url).request({
        path, method: 'GET', headers: this.signed(url, 'GET', path, '', undefined),
        headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.body.text();
      if (res.statusCode !== 200) return { error: `answered ${res.statusCode}` };
      return { body: JSON.parse(text) as unknown };
    } catch (err) {
      const e = err as { code?: string; name?: string };
      const late = e.name === 'TimeoutError' || e.name === 'AbortError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT';
      if (err instanceof SyntaxError) return { error: 'unreadable summary' };
      return { error: late ? 'timeout' : 'unreachable' };
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.peers.values()].map((p) => p.close().catch(() => undefined)));
  }
}
