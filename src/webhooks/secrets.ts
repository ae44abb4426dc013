// Endpoint signing secrets in the Standard Webhooks format: `whsec_` and the standard base64 of
// random bytes. We make 32 bytes; a secret handed to us (a test vector, an imported endpoint) may
// hold 24 to 64 (the spec: at least 24 bytes, at most 512 bits). Built only by the parser below.
// During a rotation an endpoint keeps its previous secret until an overlap deadline: every
// attempt before it is signed with both, so a receiver may switch keys at any time within it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

declare const brand: unique symbol;
export type WebhookSecret = string & { readonly [brand]: 'WebhookSecret' };

export const SECRET_PREFIX = 'whsec_';
export const MIN_SECRET_BYTES = 24;
export const MAX_SECRET_BYTES = 64;
const GENERATED_SECRET_BYTES = 32;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A `whsec_` secret, or undefined: not canonical base64, or outside 24-64 bytes. */
export function parseSecret(raw: unknown): WebhookSecret | undefined {
  if (typeof raw !== 'string' || !raw.startsWith(SECRET_PREFIX)) return undefined;
  const encoded = raw.slice(SECRET_PREFIX.length);
  if (!BASE64.test(encoded)) return undefined;
  const bytes = Buffer.from(encoded, 'base64');
  if (bytes.length < MIN_SECRET_BYTES || bytes.length > MAX_SECRET_BYTES) return undefined;
  // Non-zero padding bits would let two spellings name one key; only the canonical one passes.
  return bytes.toString('base64') === encoded ? (raw as WebhookSecret) : undefined;
}

/** A new secret from `bytes` random bytes (24-32; 32 unless a caller needs a shorter one). */
export function generateSecret(bytes: number = GENERATED_SECRET_BYTES, random: (n: number) => Uint8Array = randomBytes): WebhookSecret {
  assert.ok(Number.isInteger(bytes) && bytes >= MIN_SECRET_BYTES && bytes <= 32, 'a generated secret holds 24-32 bytes');
  const secret = parseSecret(SECRET_PREFIX + Buffer.from(random(bytes)).toString('base64'));
  assert.ok(secret !== undefined, 'a generated secret parses');
  return secret;
}

/** The HMAC key: the decoded bytes, never the text. */
export function secretKey(secret: WebhookSecret): Buffer {
  return Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64');
}

/** What an endpoint row holds about its keys. */
export interface EndpointSecrets {
  secret: string;
  previousSecret: string | null;
  previousSecretExpiresAt: Date | null;
}

/**
 * The secrets an attempt made at `at` is signed with: the current one, then the previous one
 * while its overlap lasts. A stored secret that does not parse is our bug (we only store what
 * generateSecret made or parseSecret accepted).
 */
export function signingSecrets(endpoint: EndpointSecrets, at: Date): WebhookSecret[] {
  const current = parseSecret(endpoint.secret);
  assert.ok(current !== undefined, 'a stored endpoint secret parses');
  const out = [current];
  if (endpoint.previousSecret !== null && endpoint.previousSecretExpiresAt !== null && at.getTime() < endpoint.previousSecretExpiresAt.getTime()) {
    const previous = parseSecret(endpoint.previousSecret);
    assert.ok(previous !== undefined, 'a stored previous secret parses');
    out.push(previous);
  }
  return out;
}
