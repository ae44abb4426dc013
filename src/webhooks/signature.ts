// The Standard Webhooks signature (https://www.standardwebhooks.com, "Signature scheme"): an
// HMAC-SHA256, keyed by the secret's bytes, over `${webhook-id}.${webhook-timestamp}.${body}`,
// sent as `v1,<base64>` in webhook-signature, one entry per valid secret, space-separated.
// verify() is the receiver's side, for tests and for anyone embedding a receiver: the timestamp
// must be within the tolerance either way (replays), and signatures compare in constant time.
import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { WebhookSecret } from './secrets.ts';
import { secretKey } from './secrets.ts';

export const ID_HEADER = 'webhook-id';
export const TIMESTAMP_HEADER = 'webhook-timestamp';
export const SIGNATURE_HEADER = 'webhook-signature';
/** The spec's suggested replay window, and the reference libraries' default. */
export const DEFAULT_TOLERANCE_S = 300;

const SIGNATURE_VERSION = 'v1';
const TIMESTAMP = /^[0-9]{1,15}$/;

export interface SignedContent {
  /** webhook-id: stable across every attempt of one delivery. */
  id: string;
  /** webhook-timestamp: unix seconds of this attempt. */
  timestampS: number;
  /** The exact bytes sent; a receiver must verify the raw body, never a re-serialized one. */
  body: string | Uint8Array;
}

function mac(secret: WebhookSecret, c: SignedContent): Buffer {
  return createHmac('sha256', secretKey(secret)).update(`${c.id}.${c.timestampS}.`).update(c.body).digest();
}

/** One `v1,<base64>` entry. */
export function signature(secret: WebhookSecret, c: SignedContent): string {
  // The spec: neither the id nor the timestamp may hold a `.`, or the signed text would be
  // ambiguous. Our ids and integer timestamps never do; anything else is a caller's bug.
  assert.ok(c.id.length > 0 && !c.id.includes('.'), 'a webhook id without `.`');
  assert.ok(Number.isSafeInteger(c.timestampS) && c.timestampS >= 0, 'an integer unix-seconds timestamp');
  return `${SIGNATURE_VERSION},${mac(secret, c).toString('base64')}`;
}

/** The three headers of one attempt, signed with every secret given (current first). */
export function signedHeaders(secrets: readonly WebhookSecret[], c: SignedContent): Record<string, string> {
  assert.ok(secrets.length > 0, 'at least one secret');
  return {
    [ID_HEADER]: c.id,
    [TIMESTAMP_HEADER]: String(c.timestampS),
    [SIGNATURE_HEADER]: secrets.map((s) => signature(s, c)).join(' '),
  };
}

export type VerifyFailure = 'missing_headers' | 'invalid_timestamp' | 'timestamp_out_of_tolerance' | 'no_matching_signature';
export type VerifyResult = { ok: true; id: string; timestampS: number } | { ok: false; reason: VerifyFailure };

/** Header values as node:http gives them (lower-case names). */
export type ReceivedHeaders = Record<string, string | string[] | undefined>;

export interface VerifyInput {
  body: string | Uint8Array;
  headers: ReceivedHeaders;
  /** Every secret the receiver currently trusts; one match is enough. */
  secrets: WebhookSecret | readonly WebhookSecret[];
  nowMs: number;
  toleranceS?: number;
}

const single = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v);

/** Whether a received request is authentic and fresh. A refusal is a value, never a throw. */
export function verify(input: VerifyInput): VerifyResult {
  const id = single(input.headers[ID_HEADER]);
  const timestamp = single(input.headers[TIMESTAMP_HEADER]);
  const signatures = single(input.headers[SIGNATURE_HEADER]);
  if (!id || !timestamp || !signatures) return { ok: false, reason: 'missing_headers' };
  if (!TIMESTAMP.test(timestamp)) return { ok: false, reason: 'invalid_timestamp' };
  const timestampS = Number(timestamp);
  const toleranceS = input.toleranceS ?? DEFAULT_TOLERANCE_S;
  if (Math.abs(input.nowMs / 1000 - timestampS) > toleranceS) return { ok: false, reason: 'timestamp_out_of_tolerance' };
  const secrets = typeof input.secrets === 'string' ? [input.secrets] : input.secrets;
  const candidates = signatures.split(' ').flatMap((entry) => {
    const comma = entry.indexOf(',');
    // Other versions (v1a: ed25519) are for other verifiers; skipping them is forward compatible.
    return comma > 0 && entry.slice(0, comma) === SIGNATURE_VERSION ? [Buffer.from(entry.slice(comma + 1), 'base64')] : [];
  });
  const content = { id, timestampS, body: input.body };
  for (const secret of secrets) {
    const expected = mac(secret, content);
    // The length of a SHA-256 MAC is public; only equal-length candidates are compared, in constant time.
    if (candidates.some((c) => c.length === expected.length && timingSafeEqual(c, expected))) return { ok: true, id, timestampS };
  }
  return { ok: false, reason: 'no_matching_signature' };
}
