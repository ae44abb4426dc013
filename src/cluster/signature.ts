// How a node proves to a peer that a forwarded request comes from the cluster: an HMAC-SHA256,
// keyed by CLUSTER_SECRET, over the recipient, method, path, hops header, body hash, a timestamp
// and a nonce. The secret itself never travels, a request cannot be altered in flight, and a
// captured one cannot be replayed: its timestamp must be within the window, its nonce new to the
// recipient, and the recipient the one it was signed for (each node has its own nonce memory).
// The traceparent header a forwarded request carries is left out of the signed text on purpose:
// it moves no money and the owner only labels its log lines with it (parsed strictly, a bad one
// starts a new trace); signing it would make nodes of two releases refuse each other's requests
// during a rolling deploy, and a tracing proxy that re-parents spans would turn every forwarded
// request into a 401. Altering it in flight buys mislabelled log lines, nothing more.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import assert from 'node:assert/strict';

export const SIGNATURE_HEADER = 'x-geopay-signature';
export const TIMESTAMP_HEADER = 'x-geopay-timestamp';
export const NONCE_HEADER = 'x-geopay-nonce';
export const HOPS_HEADER = 'x-geopay-hops';

/** Bumped if the signed text ever changes, so two versions never accept each other's requests. */
const VERSION = 'geopay-forward-v1';
const NONCE = /^[A-Za-z0-9_-]{16,64}$/;
const TIMESTAMP = /^[0-9]{1,15}$/;
const SIGNATURE = /^[0-9a-f]{64}$/;

export interface SignedRequest {
  /** The recipient: the internal URL it advertises (Member.url), exactly. */
  audience: string;
  method: string;
  /** As sent on the request line: path and query. */
  path: string;
  /** The raw body; '' when there is none. */
  body: string;
  /** The hops header's value, when the request carries one (a state read). */
  hops?: string;
}

function mac(secret: string, r: SignedRequest, timestamp: string, nonce: string): Buffer {
  const bodyHash = createHash('sha256').update(r.body).digest('hex');
  const text = [VERSION, r.audience, r.method.toUpperCase(), r.path, timestamp, nonce, r.hops ?? '', bodyHash].join('\n');
  return createHmac('sha256', secret).update(text).digest();
}

/** The headers that authenticate `r`, signed at `nowMs` under a nonce used once. */
export function signForward(secret: string, r: SignedRequest, nowMs: number, nonce: string): Record<string, string> {
  assert.ok(NONCE.test(nonce), 'a nonce of 16-64 url-safe characters');
  const timestamp = String(Math.floor(nowMs));
  const headers: Record<string, string> = {
    [TIMESTAMP_HEADER]: timestamp,
    [NONCE_HEADER]: nonce,
    [SIGNATURE_HEADER]: mac(secret, r, timestamp, nonce).toString('hex'),
  };
  if (r.hops !== undefined) headers[HOPS_HEADER] = r.hops;
  return headers;
}

/** `ok`, or why not: unsigned/invalid/stale/replayed are 401; busy (nonce memory full) is retryable. */
export type Verdict = 'ok' | 'unsigned' | 'invalid' | 'stale' | 'replayed' | 'busy';

export interface VerifierOptions {
  secret: string;
  /** A timestamp this far from the local clock, either way, is refused; nonces are kept as long. */
  windowMs: number;
  /** Nonces remembered at most; past it new requests are refused until old ones expire. */
  maxNonces: number;
  now: () => number;
}

type Headers = Record<string, string | string[] | undefined>;
const one = (headers: Headers, name: string): string | undefined => {
  const v = headers[name];
  return typeof v === 'string' ? v : undefined;
};

/** The receiving side: checks signatures and remembers the nonces of the window. */
export class SignatureVerifier {
  /** Nonce -> when it may be forgotten; insertion order is near expiry order (see prune). */
  private readonly seen = new Map<string, number>();

  constructor(private readonly opts: VerifierOptions) {
    assert.ok(opts.secret.length > 0);
    assert.ok(Number.isInteger(opts.windowMs) && opts.windowMs > 0);
    assert.ok(Number.isInteger(opts.maxNonces) && opts.maxNonces > 0);
  }

  get remembered(): number {
    return this.seen.size;
  }

  /** `audience` is this node's own advertised internal URL. */
  verify(r: { audience: string; method: string; path: string; body: string; headers: Headers }): Verdict {
    const timestamp = one(r.headers, TIMESTAMP_HEADER);
    const nonce = one(r.headers, NONCE_HEADER);
    const signature = one(r.headers, SIGNATURE_HEADER);
    if (timestamp === undefined || nonce === undefined || signature === undefined) return 'unsigned';
    if (!TIMESTAMP.test(timestamp) || !NONCE.test(nonce) || !SIGNATURE.test(signature)) return 'invalid';
    const hops = one(r.headers, HOPS_HEADER);
    const { audience, method, path, body } = r;
    const expected = mac(this.opts.secret, { audience, method, path, body, ...(hops === undefined ? {} : { hops }) }, timestamp, nonce);
    if (!timingSafeEqual(Buffer.from(signature, 'hex'), expected)) return 'invalid';
    // Only a request signed with the secret reaches the nonce memory: strangers cannot fill it.
    const now = this.opts.now();
    const at = Number(timestamp);
    if (Math.abs(now - at) > this.opts.windowMs) return 'stale';
    this.prune(now);
    if (this.seen.has(nonce)) return 'replayed';
    if (this.seen.size >= this.opts.maxNonces) return 'busy';
    // Its timestamp is accepted until at + window: remember the nonce that long.
    this.seen.set(nonce, at + this.opts.windowMs);
    return 'ok';
  }

  /**
   * Drops expired nonces from the oldest inserted on. Expiries follow the senders' clocks, so
   * the order is only near monotonic: an entry behind a later-expiring one waits for it, which
   * keeps it at most one window longer than needed, never shorter.
   */
  private prune(now: number): void {
    for (const [nonce, expiresAt] of this.seen) {
      if (expiresAt >= now) break;
      this.seen.delete(nonce);
    }
  }
}
