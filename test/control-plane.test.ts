// The control plane: tenants, API keys and limits in a control database apart from the region's
// own (CONTROL_DATABASE_URL), against the real PostgreSQL. What is written where; the control
// database made unreachable (connections refused and the open ones cut) while payments with keys
// seen before go on and an unseen key answers a retryable 503, never 401; and a revoked key
// refused at once on the node that revoked it and within CONTROL_CACHE_MS on another node.
import { parsePromText } from './helpers/prom-text.ts';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';

const adminUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
/** Short, so that cached keys are past their bound within the test. */
const CACHE_MS = 200;

let control: TestDatabase;
/** Node a: its own home database, the shared control database. */
let a: TestNode;

beforeAll(async () => {
  control = await createTestDatabase('cp_control');
  a = await startTestNode('cp_home_a', { controlDatabaseUrl: control.url, controlCacheMs: CACHE_MS, controlOutageGraceMs: 60_000 });
});
afterAll(async () => {
  await a?.close();
  if (control) await allowConnections(true).catch(() => undefined);
  await control?.drop();
});

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

const count = async (url: string, sql: string, params: unknown[] = []): Promise<number> =>
  Number((await query<{ n: bigint | string }>(url, sql, params))[0]!.n);

/** Refuses (or allows again) new connections to the control database; refusing also cuts the open ones. */
async function allowConnections(allow: boolean): Promise<void> {
  await query(adminUrl, `ALTER DATABASE ${control.name} WITH ALLOW_CONNECTIONS ${allow}`);
  if (!allow) await query(adminUrl, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [control.name]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function expectProblem(r: { status: number; body: any; headers: Record<string, unknown> }, status: number, code: string): void {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body).toMatchObject({ status, code });
}

async function transfer(t: TestNode, key: string, from: string, to: string, amount: string) {
  return t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: from, destinationAccountId: to, amount, currency: 'USD' } });
}

async function newKey(t: TestNode, tenantId: string): Promise<{ id: string; key: string }> {
  const r = await t.call('POST', `/v1/tenants/${tenantId}/keys`, { key: t.adminKey, idem: idem() });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return { id: r.body.id, key: r.body.key };
}

describe('the control database', () => {
  it('holds the tenants, keys and admin idempotency keys; the home database the accounts, journal and transfers', async () => {
    const tenant = await a.tenant('cp-where');
    const [src, dst] = [await a.account(tenant.key), await a.account(tenant.key)];
    expect((await a.deposit(tenant.key, src, '100')).status).toBe(201);
    expect((await transfer(a, tenant.key, src, dst, '30')).status).toBe(201);
    const home = a.db.url;

    expect(await count(control.url, 'SELECT count(*) AS n FROM tenants WHERE id = $1', [tenant.id])).toBe(1);
    expect(await count(control.url, 'SELECT count(*) AS n FROM api_keys WHERE tenant_id = $1', [tenant.id])).toBe(1);
    expect(await count(control.url, "SELECT count(*) AS n FROM api_keys WHERE role = 'admin'")).toBe(1);
    expect(await count(control.url, "SELECT count(*) AS n FROM idempotency_keys WHERE tenant_id = 'admin'")).toBe(2);
    for (const table of ['accounts', 'journal', 'transfers', 'snapshots']) expect(await count(control.url, `SELECT count(*) AS n FROM ${table}`), table).toBe(0);
    expect(await count(control.url, 'SELECT count(*) AS n FROM idempotency_keys WHERE tenant_id = $1', [tenant.id])).toBe(0);

    for (const table of ['tenants', 'api_keys']) expect(await count(home, `SELECT count(*) AS n FROM ${table}`), table).toBe(0);
    expect(await count(home, "SELECT count(*) AS n FROM idempotency_keys WHERE tenant_id = 'admin'")).toBe(0);
    expect(await count(home, 'SELECT count(*) AS n FROM accounts WHERE tenant_id = $1', [tenant.id])).toBe(2);
    // Two openings, the deposit's credit, the transfer's debit and credit.
    expect(await count(home, 'SELECT count(*) AS n FROM journal WHERE account_id = ANY($1)', [[src, dst]])).toBe(5);
    expect(await count(home, 'SELECT count(*) AS n FROM idempotency_keys WHERE tenant_id = $1', [tenant.id])).toBe(4);
  });

  it('has no foreign key from accounts to tenants in either database (migration 010); api_keys -> tenants stays', async () => {
    for (const url of [a.db.url, control.url]) {
      const fks = await query<{ rel: string; target: string }>(url,
        "SELECT conrelid::regclass::text AS rel, confrelid::regclass::text AS target FROM pg_constraint WHERE contype = 'f' AND confrelid = 'tenants'::regclass");
      expect(fks).toEqual([{ rel: 'api_keys', target: 'tenants' }]);
    }
  });
});

describe('the control database is down', () => {
  it('payments with keys seen before go on; an unseen key and admin writes answer 503 control_plane_unavailable; readiness stays; all works again after', async () => {
    const tenant = await a.tenant('cp-outage');
    const [src, dst] = [await a.account(tenant.key), await a.account(tenant.key)];
    expect((await a.deposit(tenant.key, src, '1000')).status).toBe(201);
    // Created before the outage, never used on this node: nothing of it is cached.
    const unseen = await newKey(a, tenant.id);

    await allowConnections(false);
    try {
      // Really unreachable: a new connection is refused.
      await expect(query(control.url, 'SELECT 1')).rejects.toThrow(/not currently accepting connections/);
      await sleep(2 * CACHE_MS);

      // Several times the staleness bound, and across the re-checks after a failure (1 s).
      for (let i = 0; i < 6; i++) {
        const moved = await transfer(a, tenant.key, src, dst, '10');
        expect(moved.status, JSON.stringify(moved.body)).toBe(201);
        expect(moved.body.state).toBe('settled');
        const read = await a.call('GET', `/v1/accounts/${src}`, { key: tenant.key });
        expect(read.status, JSON.stringify(read.body)).toBe(200);
        expect(read.body.balance).toBe(String(1000 - 10 * (i + 1)));
        await sleep(300);
      }
      expect((await a.call('GET', `/v1/accounts/${dst}`, { key: tenant.key })).body.balance).toBe('60');

      const refused = await a.call('GET', `/v1/accounts/${src}`, { key: unseen.key });
      expectProblem(refused, 503, 'control_plane_unavailable');
      expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // Not remembered as an answer: asked again, the same.
      expectProblem(await a.call('GET', `/v1/accounts/${src}`, { key: unseen.key }), 503, 'control_plane_unavailable');

      const created = await a.call('POST', '/v1/tenants', { key: a.adminKey, idem: idem(), body: { name: 'during the outage' } });
      expectProblem(created, 503, 'control_plane_unavailable');
      expect(created.headers['retry-after']).toBeDefined();
      expectProblem(await a.call('PUT', `/v1/tenants/${tenant.id}/limits`, { key: a.adminKey, body: { readsPerS: 5, writesPerS: 5 } }), 503, 'control_plane_unavailable');

      const ready = await a.call('GET', '/readyz');
      expect(ready.status, JSON.stringify(ready.body)).toBe(200);
      // What an operator sees: the control plane down, and payments answered from stale values.
      expect(await metric('geopay_control_plane_reachable')).toBe(0);
      expect(await metric('geopay_control_plane_stale_answers_total')).toBeGreaterThan(0);
    } finally {
      await allowConnections(true);
    }

    // Back: the unseen key is checked and works, within a few re-checks.
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      status = (await a.call('GET', `/v1/accounts/${src}`, { key: unseen.key })).status;
      if (status !== 200) await sleep(100);
    }
    expect(status).toBe(200);
    expect(await metric('geopay_control_plane_reachable')).toBe(1);
    const after = await a.call('POST', '/v1/tenants', { key: a.adminKey, idem: idem(), body: { name: 'after the outage' } });
    expect(after.status, JSON.stringify(after.body)).toBe(201);
    expect(await count(control.url, "SELECT count(*) AS n FROM tenants WHERE name = 'during the outage'")).toBe(0);
  });
});

/** A family's value on node a, summed over its samples. */
async function metric(name: string): Promise<number> {
  const f = parsePromText((await a.call('GET', '/metrics')).body as string).get(name);
  expect(f, name).toBeDefined();
  return f!.samples.reduce((n, x) => n + x.value, 0);
}

describe('revoking a key', () => {
  let b: TestNode | undefined;
  afterAll(async () => { await b?.close(); });

  it('is refused at once on the node that revoked it, within CONTROL_CACHE_MS on another; a repeat answers the same', async () => {
    // Node b: another home database (another region's, say), the same control database, and a
    // long staleness bound: only forgetting the key at once can make it refuse it at once.
    b = await startTestNode('cp_home_b', { controlDatabaseUrl: control.url, controlCacheMs: 60_000 });
    const tenant = await a.tenant('cp-revoke');
    const onA = await a.account(tenant.key);
    const onB = await b.account(tenant.key);
    const spare = await newKey(a, tenant.id);
    expect((await a.call('GET', `/v1/accounts/${onA}`, { key: tenant.key })).status).toBe(200);
    expect((await b.call('GET', `/v1/accounts/${onB}`, { key: tenant.key })).status).toBe(200);
    const keyId = (await query<{ id: string }>(control.url, 'SELECT id FROM api_keys WHERE tenant_id = $1 AND id <> $2', [tenant.id, spare.id]))[0]!.id;

    const revoked = await b.call('DELETE', `/v1/tenants/${tenant.id}/keys/${keyId}`, { key: b.adminKey });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect(revoked.body).toEqual({ id: keyId, tenantId: tenant.id, revokedAt: expect.any(String) });
    const revokedAt = Date.now();
    expectProblem(await b.call('GET', `/v1/accounts/${onB}`, { key: tenant.key }), 401, 'unauthorized');

    // Node a, CONTROL_CACHE_MS = 200: refused within it (and a margin for a loaded machine).
    let refusedAfterMs: number | undefined;
    while (refusedAfterMs === undefined && Date.now() - revokedAt < CACHE_MS + 3_000) {
      const r = await a.call('GET', `/v1/accounts/${onA}`, { key: tenant.key });
      if (r.status === 401) refusedAfterMs = Date.now() - revokedAt;
      else { expect(r.status).toBe(200); await sleep(25); }
    }
    expect(refusedAfterMs, 'node a refused the revoked key').toBeDefined();
    expect(refusedAfterMs!).toBeLessThanOrEqual(CACHE_MS + 1_000);

    const again = await a.call('DELETE', `/v1/tenants/${tenant.id}/keys/${keyId}`, { key: a.adminKey });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(revoked.body);
    // The tenant's other key is untouched, on both nodes.
    expect((await a.call('GET', `/v1/accounts/${onA}`, { key: spare.key })).status).toBe(200);
    expect((await b.call('GET', `/v1/accounts/${onB}`, { key: spare.key })).status).toBe(200);
    expect(await count(control.url, 'SELECT count(*) AS n FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NOT NULL', [tenant.id])).toBe(1);
  });

  it('answers 404 for a key of another tenant, an unknown key or tenant, and 403 to a tenant key', async () => {
    const [one, two] = [await a.tenant('cp-one'), await a.tenant('cp-two')];
    const keyOfTwo = (await query<{ id: string }>(control.url, 'SELECT id FROM api_keys WHERE tenant_id = $1', [two.id]))[0]!.id;
    expectProblem(await a.call('DELETE', `/v1/tenants/${one.id}/keys/${keyOfTwo}`, { key: a.adminKey }), 404, 'key_not_found');
    expectProblem(await a.call('DELETE', `/v1/tenants/${one.id}/keys/key_nonexistent`, { key: a.adminKey }), 404, 'key_not_found');
    expectProblem(await a.call('DELETE', `/v1/tenants/ten_${'0'.repeat(32)}/keys/${keyOfTwo}`, { key: a.adminKey }), 404, 'tenant_not_found');
    expectProblem(await a.call('DELETE', `/v1/tenants/${two.id}/keys/${keyOfTwo}`, { key: two.key }), 403, 'forbidden');
    expect((await a.call('GET', '/v1/tenants', { key: two.key })).status).toBe(403);
    expect(await count(control.url, 'SELECT count(*) AS n FROM api_keys WHERE tenant_id = ANY($1) AND revoked_at IS NOT NULL', [[one.id, two.id]])).toBe(0);
  });
});
