// Operations surface: OpenAPI (JSON and UI) covering every route, health and readiness,
// request ids, and the cleanup of idempotency keys past their retention.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

let t: TestNode;

beforeAll(async () => {
  t = await startTestNode('operations', { idempotencyRetentionMs: 1_000, idempotencyCleanupMs: 200 });
});
afterAll(async () => { await t?.close(); });

describe('operations', () => {
  it('serves the OpenAPI document and its UI at /docs, covering every route', async () => {
    const doc = await t.call('GET', '/docs/json');
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    const paths = Object.keys(doc.body.paths);
    for (const p of ['/v1/accounts', '/v1/accounts/{id}', '/v1/accounts/{id}/freeze', '/v1/accounts/{id}/unfreeze', '/v1/accounts/{id}/close',
      '/v1/accounts/{id}/statement', '/v1/deposits', '/v1/withdrawals', '/v1/transfers', '/v1/transfers/{id}', '/v1/tenants',
      '/v1/tenants/{id}/keys', '/v1/actors/accounts/{id}']) {
      expect(paths, p).toContain(p);
    }
    const ui = await t.call('GET', '/docs/');
    expect(ui.status).toBe(200);
    expect(String(ui.body)).toContain('<html');
  });

  it('answers health and readiness without a key, and echoes request ids', async () => {
    expect((await t.call('GET', '/healthz')).status).toBe(200);
    expect((await t.call('GET', '/readyz')).body).toEqual({ status: 'ready' });
    const r = await t.call('GET', '/v1/tenants', { key: t.adminKey, headers: { 'x-request-id': 'abc-123' } });
    expect(r.headers['x-request-id']).toBe('abc-123');
  });

  it('deletes idempotency keys past their retention', async () => {
    const { key } = await t.tenant();
    const k = idem();
    const acc = await t.call('POST', '/v1/accounts', { key, idem: k, body: { currency: 'EUR' } });
    expect(acc.status).toBe(201);
    const count = async () => (await t.node.pool.query<{ n: bigint }>('SELECT count(*) AS n FROM idempotency_keys WHERE key = $1', [k])).rows[0]!.n;
    expect(await count()).toBe(1n);
    const deadline = Date.now() + 10_000;
    while ((await count()) !== 0n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(await count()).toBe(0n);
  });
});
