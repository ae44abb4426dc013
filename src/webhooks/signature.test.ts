// Signing and verifying per Standard Webhooks, checked against the specification's published
// vector, and secret rotation: two signatures while the overlap lasts, each verifying alone.
import { describe, expect, it } from 'vitest';
import { generateSecret, parseSecret, secretKey, signingSecrets } from './secrets.ts';
import type { WebhookSecret } from './secrets.ts';
import { signature, signedHeaders, verify } from './signature.ts';

const secretOf = (raw: string): WebhookSecret => {
  const s = parseSecret(raw);
  if (s === undefined) throw new Error(`test secret does not parse: ${raw}`);
  return s;
};

// The vector of the reference JavaScript library's test "sign function works":
// github.com/standard-webhooks/standard-webhooks, libraries/javascript/src/webhook.test.ts.
const SPEC = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestampS: 1614265330,
  body: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};

describe('secrets', () => {
  it('generates whsec_ secrets of 32 random bytes that parse, and 24-32 on request', () => {
    const a = generateSecret();
    expect(a).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(secretKey(a)).toHaveLength(32);
    expect(generateSecret()).not.toBe(a);
    expect(secretKey(generateSecret(24))).toHaveLength(24);
    expect(() => generateSecret(16)).toThrow();
    expect(() => generateSecret(33)).toThrow();
  });

  it('parses the spec secret (24 bytes) and refuses what is not a canonical 24-64 byte whsec_ secret', () => {
    expect(secretKey(secretOf(SPEC.secret))).toHaveLength(24);
    const of = (n: number) => `whsec_${Buffer.alloc(n, 7).toString('base64')}`;
    expect(parseSecret(of(64))).toBe(of(64));
    for (const bad of [SPEC.secret.slice('whsec_'.length), of(23), of(65), 'whsec_', 'whsec_MfKQ9r8G KYqrTwjUPD8ILPZIo2LaLaSw', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS-',
      // 25 bytes end in `Bw==`; `Bx==` decodes to the same bytes but sets padding bits: not canonical.
      of(25).replace(/w==$/, 'x=='), 42, null]) {
      expect(parseSecret(bad), String(bad)).toBeUndefined();
    }
  });
});

describe('signature', () => {
  it('reproduces the specification vector', () => {
    expect(signature(secretOf(SPEC.secret), { id: SPEC.id, timestampS: SPEC.timestampS, body: SPEC.body })).toBe(SPEC.signature);
  });

  it('verifies the specification vector within the tolerance, either side, and refuses it outside', () => {
    const headers = { 'webhook-id': SPEC.id, 'webhook-timestamp': String(SPEC.timestampS), 'webhook-signature': SPEC.signature };
    const at = SPEC.timestampS * 1000;
    const secrets = secretOf(SPEC.secret);
    expect(verify({ body: SPEC.body, headers, secrets, nowMs: at })).toEqual({ ok: true, id: SPEC.id, timestampS: SPEC.timestampS });
    expect(verify({ body: Buffer.from(SPEC.body), headers, secrets, nowMs: at + 300_000 }).ok).toBe(true);
    expect(verify({ body: SPEC.body, headers, secrets, nowMs: at - 300_000 }).ok).toBe(true);
    expect(verify({ body: SPEC.body, headers, secrets, nowMs: at + 301_000 })).toEqual({ ok: false, reason: 'timestamp_out_of_tolerance' });
    expect(verify({ body: SPEC.body, headers, secrets, nowMs: at - 301_000 })).toEqual({ ok: false, reason: 'timestamp_out_of_tolerance' });
    expect(verify({ body: SPEC.body, headers, secrets, nowMs: at + 600_000, toleranceS: 900 }).ok).toBe(true);
  });

  it('refuses a changed body, id or timestamp, another secret, and malformed headers', () => {
    const secret = secretOf(SPEC.secret);
    const nowMs = SPEC.timestampS * 1000;
    const good = signedHeaders([secret], SPEC);
    const check = (headers: Record<string, string | string[] | undefined>, body = SPEC.body, secrets: WebhookSecret | WebhookSecret[] = secret) => verify({ body, headers, secrets, nowMs });
    expect(check(good).ok).toBe(true);
    expect(check(good, SPEC.body + ' ')).toEqual({ ok: false, reason: 'no_matching_signature' });
    expect(check({ ...good, 'webhook-id': 'msg_other' })).toEqual({ ok: false, reason: 'no_matching_signature' });
    expect(check({ ...good, 'webhook-timestamp': String(SPEC.timestampS + 1) })).toEqual({ ok: false, reason: 'no_matching_signature' });
    expect(check(good, SPEC.body, generateSecret())).toEqual({ ok: false, reason: 'no_matching_signature' });
    expect(check({ ...good, 'webhook-signature': undefined })).toEqual({ ok: false, reason: 'missing_headers' });
    expect(check({ ...good, 'webhook-id': ['a', 'b'] })).toEqual({ ok: false, reason: 'missing_headers' });
    expect(check({ ...good, 'webhook-timestamp': 'hello' })).toEqual({ ok: false, reason: 'invalid_timestamp' });
    expect(check({ ...good, 'webhook-signature': good['webhook-signature']!.slice(0, 8) })).toEqual({ ok: false, reason: 'no_matching_signature' });
    expect(check({ ...good, 'webhook-signature': 'v1,' })).toEqual({ ok: false, reason: 'no_matching_signature' });
    // A v2 entry with the right bytes is not a v1 signature.
    expect(check({ ...good, 'webhook-signature': good['webhook-signature']!.replace('v1,', 'v2,') })).toEqual({ ok: false, reason: 'no_matching_signature' });
  });

  it('finds the valid entry among several (the spec library\'s multi-signature case)', () => {
    const secret = secretOf(SPEC.secret);
    const header = ['v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=', 'v1a,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=', SPEC.signature].join(' ');
    const headers = { 'webhook-id': SPEC.id, 'webhook-timestamp': String(SPEC.timestampS), 'webhook-signature': header };
    expect(verify({ body: SPEC.body, headers, secrets: [generateSecret(), secret], nowMs: SPEC.timestampS * 1000 }).ok).toBe(true);
  });

  it('refuses to sign an id with a `.` (the signed text would be ambiguous)', () => {
    expect(() => signature(secretOf(SPEC.secret), { ...SPEC, id: 'msg.1' })).toThrow();
  });
});

describe('rotation', () => {
  const current = generateSecret();
  const previous = generateSecret();
  const expires = new Date('2030-01-02T00:00:00Z');
  const endpoint = { secret: current, previousSecret: previous, previousSecretExpiresAt: expires };

  it('signs with both secrets until the overlap deadline; each verifies alone', () => {
    const at = new Date(expires.getTime() - 1);
    const secrets = signingSecrets(endpoint, at);
    expect(secrets).toEqual([current, previous]);
    const content = { id: 'msg_0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4', timestampS: Math.floor(at.getTime() / 1000), body: '{"type":"transfer.settled"}' };
    const headers = signedHeaders(secrets, content);
    const entries = headers['webhook-signature']!.split(' ');
    expect(entries).toHaveLength(2);
    expect(entries[0]).toBe(signature(current, content));
    expect(entries[1]).toBe(signature(previous, content));
    for (const s of [current, previous]) expect(verify({ body: content.body, headers, secrets: s, nowMs: at.getTime() }).ok).toBe(true);
    expect(verify({ body: content.body, headers, secrets: generateSecret(), nowMs: at.getTime() }).ok).toBe(false);
  });

  it('signs with the current secret alone from the deadline on, and when there is no previous one', () => {
    expect(signingSecrets(endpoint, expires)).toEqual([current]);
    expect(signingSecrets({ secret: current, previousSecret: null, previousSecretExpiresAt: null }, new Date(0))).toEqual([current]);
  });
});
