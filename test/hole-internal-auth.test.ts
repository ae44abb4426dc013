// Hole 9: the node-to-node endpoints. /internal is served on a listener of its own
// (INTERNAL_HOST/INTERNAL_PORT), never on the public port, and a forwarded request carries an
// HMAC-SHA256 over recipient, method, path, hops, body, timestamp and nonce instead of the bare
// secret: a wrong, tampered, stale, misdirected or replayed signature answers 401 and moves nothing. The signing
// below is written from the documented format (docs/architecture.md, "Ownership and
// fencing"), not imported, so the test checks the wire contract a peer relies on.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeRequest } from '../src/actors/wire.ts';
import type { AccountId, TenantId } from '../src/domain/ids.ts';
import { makeTransferId, regionOf, uuidv7Hex } from '../src/domain/ids.ts';
import type { TestNode } from './helpers/node.ts';
import { startTestNode } from './helpers/node.ts';

const SECRET = `gp_cluster_${randomBytes(16).toString('hex')}`;
const WINDOW_MS = 30_000;

let t: TestNode;
let tenant: { id: string; key: string };
let source: string;
let destination: string;

beforeAll(async () => {
  // No REDIS_URLS: a single node that owns every shard, so a forwarded command runs here.
  t = await startTestNode('hole_internal_auth', { clusterSecret: SECRET, clusterSignatureWindowMs: WINDOW_MS });
  tenant = await t.tenant();
  source = await t.account(tenant.key);
  destination = await t.account(tenant.key);
  const d = await t.deposit(tenant.key, source, '1000');
  expect(d.status, JSON.stringify(d.body)).toBe(201);
});
afterAll(async () => { await t?.close(); });

/** The internal listener's base URL: loopback, a port of its own. */
function internalUrl(): string {
  const url = t.node.internalUrl;
  expect(url, 'the node serves /internal on a listener of its own').toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  expect(url).not.toBe(t.node.url);
  return url!;
}

interface Signing { secret?: string; timestamp?: number; nonce?: string; hops?: string; audience?: string }

/** The headers of a forwarded request, signed as docs/architecture.md says. */
function sign(method: string, path: string, body: string, o: Signing = {}): Record<string, string> {
  const timestamp = String(o.timestamp ?? Date.now());
  const nonce = o.nonce ?? randomBytes(16).toString('hex');
  const bodyHash = createHash('sha256').update(body).digest('hex');
  // The recipient is the internal URL it advertises; before the split there was none.
  const audience = o.audience ?? t.node.internalUrl ?? t.node.url;
  const signed = ['geopay-forward-v1', audience, method, path, timestamp, nonce, o.hops ?? '', bodyHash].join('\n');
  const signature = createHmac('sha256', o.secret ?? SECRET).update(signed).digest('hex');
  const headers: Record<string, string> = { 'x-geopay-timestamp': timestamp, 'x-geopay-nonce': nonce, 'x-geopay-signature': signature };
  if (o.hops !== undefined) headers['x-geopay-hops'] = o.hops;
  return headers;
}

/** A forged-looking but well-formed Debit of `amount` from the source towards the destination. */
function debitBody(amount: bigint, transferId = makeTransferId(regionOf(source as AccountId), uuidv7Hex(Date.now(), randomBytes(10)))): string {
  return encodeRequest({
    req: {
      cmd: { type: 'Debit', transferId, amount, currency: 'USD' as never },
      transfer: { destinationId: destination as AccountId, kind: 'transfer', tenantId: tenant.id as TenantId, metadata: null },
    },
    at: new Date().toISOString(),
    hops: 1,
  });
}

const commandsPath = (account: string) => `/internal/v1/accounts/${encodeURIComponent(account)}/commands`;
const statePath = (account: string) => `/internal/v1/accounts/${encodeURIComponent(account)}/state`;

async function send(base: string, method: 'GET' | 'POST', path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; text: string }> {
  const res = await request(base + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body }),
  });
  return { status: res.statusCode, text: await res.body.text() };
}

/** What must not move: both balances, and the journal of both accounts. */
async function ledger(): Promise<{ source: string; destination: string; postings: number }> {
  const [s, d] = await Promise.all([source, destination].map((id) => t.call('GET', `/v1/accounts/${id}`, { key: tenant.key })));
  const { rows } = await t.node.pool.query<{ n: string }>('SELECT count(*)::text AS n FROM journal WHERE account_id = ANY($1)', [[source, destination]]);
  return { source: s!.body.balance, destination: d!.body.balance, postings: Number(rows[0]!.n) };
}

function expectUnauthorized(r: { status: number; text: string }, what: string): void {
  expect(r.status, `${what}: ${r.text}`).toBe(401);
  expect(JSON.parse(r.text)).toMatchObject({ code: 'unauthorized' });
}

async function waitFor(what: string, deadlineMs: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('hole 9: /internal on its own listener, signed requests', () => {
  it('the public port answers 404 for /internal, with the bare secret or a valid signature, and nothing moves', async () => {
    const before = await ledger();
    const body = debitBody(100n);
    const path = commandsPath(source);
    const attempts = [
      { 'x-geopay-cluster-secret': SECRET },
      sign('POST', path, body),
    ];
    for (const headers of attempts) {
      const overSocket = await send(t.node.url, 'POST', path, headers, body);
      expect(overSocket.status, overSocket.text).toBe(404);
      const injected = await t.call('POST', path, { rawBody: body, headers });
      expect(injected.status).toBe(404);
    }
    const state = await send(t.node.url, 'GET', statePath(source), { 'x-geopay-cluster-secret': SECRET, ...sign('GET', statePath(source), '', { hops: '1' }) });
    expect(state.status, state.text).toBe(404);
    expect(await ledger()).toEqual(before);
  });

  it('a wrong, tampered or stale signature, or the bare secret, answers 401 on the internal port and nothing moves', async () => {
    const base = internalUrl();
    const before = await ledger();
    const path = commandsPath(source);
    const body = debitBody(100n);
    const cases: [string, Record<string, string>, string?][] = [
      ['no signature', {}],
      ['the bare secret', { 'x-geopay-cluster-secret': SECRET }],
      ['another key', sign('POST', path, body, { secret: `gp_cluster_${randomBytes(16).toString('hex')}` })],
      ['a body changed after signing', sign('POST', path, debitBody(1n)), body],
      ['a path changed after signing', sign('POST', commandsPath(destination), body)],
      ['a method changed after signing', sign('PUT', path, body)],
      ['signed for another node', sign('POST', path, body, { audience: 'http://127.0.0.1:1' })],
      ['a stale timestamp', sign('POST', path, body, { timestamp: Date.now() - WINDOW_MS - 5_000 })],
      ['a timestamp from the future', sign('POST', path, body, { timestamp: Date.now() + WINDOW_MS + 5_000 })],
      ['a timestamp that is not a number', { ...sign('POST', path, body), 'x-geopay-timestamp': 'soon' }],
      ['a malformed signature', { ...sign('POST', path, body), 'x-geopay-signature': 'zz' }],
    ];
    for (const [what, headers, sent] of cases) expectUnauthorized(await send(base, 'POST', path, headers, sent ?? body), what);

    // The state read: its hops header is signed too.
    const state = statePath(source);
    expectUnauthorized(await send(base, 'GET', state, { ...sign('GET', state, '', { hops: '0' }), 'x-geopay-hops': '1' }), 'hops changed after signing');
    expectUnauthorized(await send(base, 'GET', state, { 'x-geopay-cluster-secret': SECRET, 'x-geopay-hops': '1' }), 'state with the bare secret');
    expect(await ledger()).toEqual(before);
  });

  it('a correct signature works once; its replay, or its nonce reused, answers 401 and moves nothing', async () => {
    const base = internalUrl();
    const before = await ledger();
    const path = commandsPath(source);
    const body = debitBody(100n);
    const headers = sign('POST', path, body);

    const first = await send(base, 'POST', path, headers, body);
    expect(first.status, first.text).toBe(200);
    expect(JSON.parse(first.text)).toMatchObject({ type: 'done', reply: { ok: true } });
    // The saga credits the destination after the debit's commit.
    await waitFor('the forwarded transfer to settle', 20_000, async () => (await ledger()).destination === String(BigInt(before.destination) + 100n));
    const after = await ledger();
    expect(after).toEqual({ source: String(BigInt(before.source) - 100n), destination: String(BigInt(before.destination) + 100n), postings: before.postings + 2 });

    expectUnauthorized(await send(base, 'POST', path, headers, body), 'the same request again');
    // A fresh signature under a nonce already used, over a new command: refused all the same.
    const again = debitBody(100n);
    expectUnauthorized(await send(base, 'POST', path, sign('POST', path, again, { nonce: headers['x-geopay-nonce']! }), again), 'a reused nonce');
    await new Promise((r) => setTimeout(r, 300));
    expect(await ledger()).toEqual(after);

    // A signed state read answers the owner's committed state; its replay does not.
    const state = statePath(source);
    const readHeaders = sign('GET', state, '', { hops: '1' });
    const read = await send(base, 'GET', state, readHeaders);
    expect(read.status, read.text).toBe(200);
    expect(JSON.parse(read.text)).toMatchObject({ state: { id: source } });
    expectUnauthorized(await send(base, 'GET', state, readHeaders), 'the same read again');
  });

  it('the public port serves the tenant API as before', async () => {
    const r = await send(t.node.url, 'GET', `/v1/accounts/${source}`, { authorization: `Bearer ${tenant.key}` });
    expect(r.status, r.text).toBe(200);
    const health = await send(internalUrl(), 'GET', '/healthz', {});
    expect(health.status, 'the internal listener serves /internal only').toBe(404);
  });

  it('remembered nonces expire with the window and their number is bounded', async () => {
    const { SignatureVerifier, signForward } = await import('../src/cluster/signature.ts');
    let now = 1_000_000;
    const verifier = new SignatureVerifier({ secret: SECRET, windowMs: 1_000, maxNonces: 3, now: () => now });
    const req = (nonce: string) => {
      const signed = { audience: 'http://10.0.0.7:4000', method: 'POST', path: '/internal/x', body: '{}' };
      return { ...signed, headers: signForward(SECRET, signed, now, nonce) };
    };
    const first = req('n'.repeat(16));
    expect(verifier.verify(first)).toBe('ok');
    expect(verifier.verify(first)).toBe('replayed');
    for (const n of ['a', 'b']) expect(verifier.verify(req(n.repeat(16)))).toBe('ok');
    // Full: a fourth nonce inside the window is refused (fail closed), never an old one forgotten early.
    expect(verifier.verify(req('c'.repeat(16)))).toBe('busy');
    expect(verifier.remembered).toBe(3);
    // Past the window the old nonces are dropped: a stale copy is refused by its timestamp anyway.
    now += 2_001;
    expect(verifier.verify(first)).toBe('stale');
    expect(verifier.verify(req('d'.repeat(16)))).toBe('ok');
    expect(verifier.remembered).toBe(1);
  });
});
