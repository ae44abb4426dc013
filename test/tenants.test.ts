// Tenants and API keys: the admin creates tenants and keys (idempotently), keys are stored only
// as hashes and a tenant key is shown once, each key reaches its own tenant's accounts only,
// and the admin inspection endpoint reports an account actor's state, sequence numbers and
// owner consistently with what is in PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

let t: TestNode;

beforeAll(async () => {
  t = await startTestNode('tenants');
});
afterAll(async () => { await t?.close(); });

const admin = () => t.adminKey;

async function count(sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await t.node.pool.query<{ n: bigint }>(sql, params);
  return Number(rows[0]!.n);
}

/** Rows of a table whose text (every column) contains `needle`. */
const rowsContaining = (table: 'api_keys' | 'idempotency_keys' | 'tenants' | 'accounts', needle: string) =>
  count(`SELECT count(*) AS n FROM ${table} x WHERE strpos(row_to_json(x)::text, $1) > 0`, [needle]);

function expectProblem(r: { status: number; body: any; headers: Record<string, unknown> }, status: number, code: string): void {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(String(r.headers['content-type'])).toMatch(/^application\/problem\+json/);
  expect(r.body).toMatchObject({ status, code });
}

describe('tenants', () => {
  it('the admin creates tenants and lists them; a replay of the creation returns the same tenant', async () => {
    const before = await count('SELECT count(*) AS n FROM tenants');
    const k = idem();
    const created = await t.call('POST', '/v1/tenants', { key: admin(), idem: k, body: { name: 'Acme Payments' } });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ id: expect.stringMatching(/^ten_[0-9a-f]{32}$/), name: 'Acme Payments', createdAt: expect.any(String) });
    expect(Number.isNaN(Date.parse(created.body.createdAt))).toBe(false);

    const again = await t.call('POST', '/v1/tenants', { key: admin(), idem: k, body: { name: 'Acme Payments' } });
    expect(again.status).toBe(201);
    expect(again.body).toEqual(created.body);
    expect(await count('SELECT count(*) AS n FROM tenants')).toBe(before + 1);

    const reused = await t.call('POST', '/v1/tenants', { key: admin(), idem: k, body: { name: 'Other Name' } });
    expectProblem(reused, 422, 'idempotency_key_reused');
    expect(await count('SELECT count(*) AS n FROM tenants')).toBe(before + 1);

    const other = await t.call('POST', '/v1/tenants', { key: admin(), idem: idem(), body: { name: 'Globex' } });
    expect(other.status).toBe(201);
    const list = await t.call('GET', '/v1/tenants', { key: admin() });
    expect(list.status).toBe(200);
    const ids = (list.body.data as { id: string; name: string }[]).map((x) => `${x.id}:${x.name}`);
    expect(ids).toContain(`${created.body.id}:Acme Payments`);
    expect(ids).toContain(`${other.body.id}:Globex`);
    expect(ids.filter((x) => x.startsWith(created.body.id))).toHaveLength(1);
  });

  it('keys for a tenant that does not exist: 404 tenant_not_found, nothing written', async () => {
    const before = await count('SELECT count(*) AS n FROM api_keys');
    for (const id of [`ten_${'0'.repeat(32)}`, 'not-a-tenant']) {
      const r = await t.call('POST', `/v1/tenants/${id}/keys`, { key: admin(), idem: idem() });
      expectProblem(r, 404, 'tenant_not_found');
    }
    expect(await count('SELECT count(*) AS n FROM api_keys')).toBe(before);
  });
});

describe('API keys', () => {
  it('the admin key is stored hashed: no row of api_keys holds the key string', async () => {
    const { rows } = await t.node.pool.query<{ id: string; key_hash: string; tenant_id: string | null }>("SELECT id, key_hash, tenant_id FROM api_keys WHERE role = 'admin'");
    expect(rows).toHaveLength(1);
    expect(rows[0]!.tenant_id).toBeNull();
    expect(rows[0]!.key_hash).not.toBe(t.adminKey);
    expect(rows[0]!.key_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(await rowsContaining('api_keys', t.adminKey)).toBe(0);
    // (The probe itself finds what is there.)
    expect(await rowsContaining('api_keys', rows[0]!.key_hash)).toBe(1);
    // Not even a recognisable part of it.
    expect(await rowsContaining('api_keys', t.adminKey.slice(-16))).toBe(0);
    // And the key still works, so what is stored does identify it.
    expect((await t.call('GET', '/v1/tenants', { key: admin() })).status).toBe(200);
  });

  it('a tenant key is shown once: the replayed creation returns the same key id without the key; only its hash is stored', async () => {
    const ten = await t.call('POST', '/v1/tenants', { key: admin(), idem: idem(), body: { name: 'once' } });
    const tenantId = ten.body.id as string;
    const before = await count('SELECT count(*) AS n FROM api_keys');
    const k = idem();
    const first = await t.call('POST', `/v1/tenants/${tenantId}/keys`, { key: admin(), idem: k });
    expect(first.status).toBe(201);
    expect(first.body).toEqual({ id: expect.stringMatching(/^key_/), tenantId, key: expect.any(String) });
    const secret = first.body.key as string;
    expect(secret.length).toBeGreaterThanOrEqual(24);

    const replay = await t.call('POST', `/v1/tenants/${tenantId}/keys`, { key: admin(), idem: k });
    expect(replay.status).toBe(201);
    expect(replay.body).toEqual({ id: first.body.id, tenantId });
    expect(replay.body).not.toHaveProperty('key');
    expect(JSON.stringify(replay.body)).not.toContain(secret);
    expect(await count('SELECT count(*) AS n FROM api_keys')).toBe(before + 1);

    // The same Idempotency-Key for another tenant's key is another request.
    const other = await t.call('POST', '/v1/tenants', { key: admin(), idem: idem(), body: { name: 'other' } });
    expectProblem(await t.call('POST', `/v1/tenants/${other.body.id}/keys`, { key: admin(), idem: k }), 422, 'idempotency_key_reused');
    expect(await count('SELECT count(*) AS n FROM api_keys')).toBe(before + 1);

    // Stored as a hash, and nowhere in clear: not in api_keys, not in the stored idempotent answer.
    const { rows } = await t.node.pool.query<{ key_hash: string; role: string; tenant_id: string }>('SELECT key_hash, role, tenant_id FROM api_keys WHERE id = $1', [first.body.id]);
    expect(rows).toEqual([{ key_hash: expect.stringMatching(/^[0-9a-f]{64}$/), role: 'tenant', tenant_id: tenantId }]);
    expect(rows[0]!.key_hash).not.toBe(secret);
    for (const table of ['api_keys', 'idempotency_keys', 'tenants', 'accounts'] as const) {
      expect(await rowsContaining(table, secret), table).toBe(0);
    }

    // The key shown once works.
    const acc = await t.call('POST', '/v1/accounts', { key: secret, idem: idem(), body: { currency: 'USD' } });
    expect(acc.status).toBe(201);
    expect(acc.body.tenantId).toBe(tenantId);
  });

  it('a tenant may hold several keys, each acting for that tenant', async () => {
    const { id: tenantId, key: k1 } = await t.tenant('multi-key');
    const k2r = await t.call('POST', `/v1/tenants/${tenantId}/keys`, { key: admin(), idem: idem() });
    expect(k2r.status).toBe(201);
    const k2 = k2r.body.key as string;
    expect(k2).not.toBe(k1);
    const acc = await t.account(k1, 'EUR');
    const r = await t.call('GET', `/v1/accounts/${acc}`, { key: k2 });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: acc, tenantId });
  });
});

describe('a tenant reaches only its own accounts', () => {
  it('reads its own accounts, and gets 404 for the other tenant\'s, the same as for no account', async () => {
    const a = await t.tenant('reader-a');
    const b = await t.tenant('reader-b');
    const a1 = await t.account(a.key, 'USD', { metadata: { label: 'a-one' } });
    const a2 = await t.account(a.key, 'EUR');
    const b1 = await t.account(b.key, 'USD', { metadata: { label: 'b-secret' } });
    expect((await t.deposit(b.key, b1, '4242')).status).toBe(201);

    for (const id of [a1, a2]) {
      const r = await t.call('GET', `/v1/accounts/${id}`, { key: a.key });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ id, tenantId: a.id });
    }
    const own = await t.call('GET', `/v1/accounts/${b1}`, { key: b.key });
    expect(own.body).toMatchObject({ id: b1, tenantId: b.id, balance: '4242', metadata: { label: 'b-secret' } });

    const ghost = await t.call('GET', `/v1/accounts/acc_local_${'0'.repeat(32)}`, { key: a.key });
    for (const url of [`/v1/accounts/${b1}`, `/v1/accounts/${b1}/statement`]) {
      const r = await t.call('GET', url, { key: a.key });
      expectProblem(r, 404, 'account_not_found');
      expect(r.body).toEqual(ghost.body);
      expect(JSON.stringify(r.body)).not.toMatch(/b-secret|4242/);
    }
    // And the other way round.
    expectProblem(await t.call('GET', `/v1/accounts/${a1}`, { key: b.key }), 404, 'account_not_found');

    // There is no listing endpoint in docs/api.md; if one exists it must list only the caller's accounts.
    const list = await t.call('GET', '/v1/accounts', { key: a.key });
    if (list.status === 200) {
      const ids = (list.body.data as { id: string; tenantId: string }[]).map((x) => x.id);
      expect(ids.sort()).toEqual([a1, a2].sort());
    } else {
      expectProblem(list, 404, 'not_found');
    }
  });
});

describe('the actor inspection endpoint', () => {
  it('reports a resident actor of an account that has had a deposit, consistently with PostgreSQL', async () => {
    const { key } = await t.tenant('inspected');
    const acc = await t.account(key, 'USD');
    expect((await t.deposit(key, acc, '1234')).status).toBe(201);

    const r = await t.call('GET', `/v1/actors/accounts/${acc}`, { key: admin() });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const b = r.body;
    expect(b.accountId).toBe(acc);
    expect(b.resident).toBe(true);
    expect(b.state).toMatchObject({ id: acc, currency: 'USD', status: 'open', balance: '1234', available: '1234', seq: 2 });
    expect(b.mailboxDepth).toBe(0);
    // open + credit
    expect(b.journalSeq).toBe(2);
    expect(Number.isInteger(b.lastSnapshotSeq)).toBe(true);
    expect(b.lastSnapshotSeq).toBeGreaterThanOrEqual(0);
    expect(b.lastSnapshotSeq).toBeLessThanOrEqual(b.journalSeq);

    const { rows: accRows } = await t.node.pool.query<{ shard: string }>('SELECT shard FROM accounts WHERE id = $1', [acc]);
    const { rows: shardRows } = await t.node.pool.query<{ epoch: bigint; owner: string; region: string }>('SELECT epoch, owner, region FROM shards WHERE id = $1', [accRows[0]!.shard]);
    expect(b.owner).toMatchObject({ node: t.cfg.nodeId, region: t.cfg.region, shard: accRows[0]!.shard, epoch: String(shardRows[0]!.epoch) });
    expect(shardRows[0]!.owner).toBe(t.cfg.nodeId);
    expect(BigInt(b.owner.epoch)).toBeGreaterThanOrEqual(1n);
    const { rows: j } = await t.node.pool.query<{ seq: bigint; epoch: bigint }>('SELECT max(seq) AS seq, max(epoch) AS epoch FROM journal WHERE account_id = $1', [acc]);
    expect(b.journalSeq).toBe(Number(j[0]!.seq));
    expect(BigInt(b.owner.epoch)).toBe(j[0]!.epoch);
  });

  it('after a restart the actor is not resident, and the sequence numbers and a newer epoch are still reported', async () => {
    const { key } = await t.tenant('restarted');
    const acc = await t.account(key, 'EUR');
    expect((await t.deposit(key, acc, '99', 'EUR')).status).toBe(201);
    const before = (await t.call('GET', `/v1/actors/accounts/${acc}`, { key: admin() })).body;
    await t.restart();
    const r = await t.call('GET', `/v1/actors/accounts/${acc}`, { key: admin() });
    expect(r.status).toBe(200);
    expect(r.body.resident).toBe(false);
    expect(r.body.mailboxDepth).toBe(0);
    expect(r.body.journalSeq).toBe(2);
    expect(r.body.lastSnapshotSeq).toBeLessThanOrEqual(2);
    expect(r.body.owner.shard).toBe(before.owner.shard);
    expect(BigInt(r.body.owner.epoch)).toBeGreaterThan(BigInt(before.owner.epoch));
    // The admin key survived the restart without a second row.
    expect(await count("SELECT count(*) AS n FROM api_keys WHERE role = 'admin'")).toBe(1);
    // Reading the account brings its actor back with the same state.
    expect((await t.call('GET', `/v1/accounts/${acc}`, { key })).body.balance).toBe('99');
    const back = await t.call('GET', `/v1/actors/accounts/${acc}`, { key: admin() });
    expect(back.body).toMatchObject({ resident: true, journalSeq: 2, state: { balance: '99', seq: 2 } });
  });

  it('answers 404 account_not_found for an account that does not exist, and 403 to a tenant key', async () => {
    expectProblem(await t.call('GET', `/v1/actors/accounts/acc_local_${'0'.repeat(32)}`, { key: admin() }), 404, 'account_not_found');
    expectProblem(await t.call('GET', '/v1/actors/accounts/nonsense', { key: admin() }), 404, 'account_not_found');
    const { key } = await t.tenant('nosy');
    const acc = await t.account(key);
    expectProblem(await t.call('GET', `/v1/actors/accounts/${acc}`, { key }), 403, 'forbidden');
  });
});
