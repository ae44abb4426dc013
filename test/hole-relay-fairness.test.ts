// Issue 9, point 1: the relay and the hold sweeper must not stall behind rows they cannot move.
// A region is down (REGION_FAILOVER=deny): 600 transfers into it sit `debited` at their eu
// source and 600 holds of its accounts are past their deadline. Neither can move, and both
// are older than the unrelated work that follows. The eu node must still expire its own due
// hold, and re-deliver the credit of an eu-to-eu transfer that a kill -9 left between debit
// and credit. When the region is back, its backlog drains too.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { startCluster, startRedisMasters, waitFor } from './helpers/cluster.ts';
import type { ClusterNode, LocalCluster, RedisMasters } from './helpers/cluster.ts';
import { api } from './helpers/server-process.ts';
import type { Api, ApiResponse } from './helpers/server-process.ts';

const BACKLOG = 600; // past the relay's and the sweeper's 500 rows per pass
const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;

let db: TestDatabase;
let redis: RedisMasters;
let cluster: LocalCluster;
let check: pg.Client;
let key: string;
let eu: ClusterNode;
const acc = { a: '', b: '', c: '', v: '', u: [] as string[] };

/** Retries a 503 (a shard being taken) with the same Idempotency-Key until it lands. */
async function landed(send: (k: string) => Promise<ApiResponse>): Promise<ApiResponse> {
  const k = randomBytes(8).toString('hex');
  const deadline = Date.now() + 20_000;
  for (;;) {
    const r = await send(k);
    if (r.status !== 503 || Date.now() > deadline) return r;
    await sleep(200);
  }
}

async function open(c: Api, region: string): Promise<string> {
  const r = await landed((k) => c.post('/v1/accounts', { currency: 'USD', region }, k));
  if (r.status !== 201) throw new Error(`open in ${region}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.id as string;
}

async function deposit(c: Api, accountId: string, amount: string): Promise<void> {
  const r = await landed((k) => c.post('/v1/deposits', { accountId, amount, currency: 'USD' }, k));
  if (r.status !== 201) throw new Error(`deposit: ${r.status} ${JSON.stringify(r.body)}`);
}

const count = async (sql: string, params: unknown[]): Promise<number> => Number((await check.query<{ n: string }>(sql, params)).rows[0]!.n);

beforeAll(async () => {
  db = await createTestDatabase('hole_relay_fairness');
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: db.url, adminKey, regions: { eu: 1, us: 0 }, redisUrls: redis.urls,
    env: {
      LEASE_TTL_MS: '2000', SHARD_BUCKETS: '4', REGION_FAILOVER: 'deny', RELAY_INTERVAL_MS: '200', RELAY_MIN_AGE_MS: '500',
      RELAY_MAX_BACKOFF_MS: '2000', TRANSFER_WAIT_MS: '500', LOG_LEVEL: 'error', REDIS_KEY_PREFIX: `rf${randomBytes(3).toString('hex')}:`,
    },
  });
  // The us node sweeps only at its start: the us holds below stay held past their deadline.
  const us = await cluster.addNode('us', { env: { RELAY_INTERVAL_MS: '600000' } });
  eu = cluster.live('eu')[0]!;
  check = new pg.Client({ connectionString: db.url });
  await check.connect();
  const admin = api(eu.url, adminKey);
  const tenant = await admin.post('/v1/tenants', { name: 'fairness' });
  key = (await admin.post(`/v1/tenants/${tenant.body.id}/keys`)).body.key as string;
  const c = api(eu.url, key);
  [acc.a, acc.b, acc.c, acc.v, ...acc.u] = await Promise.all([
    open(c, 'eu'), open(c, 'eu'), open(c, 'eu'), open(c, 'us'), open(c, 'us'), open(c, 'us'), open(c, 'us'), open(c, 'us'),
  ]);
  await Promise.all([deposit(c, acc.a, '1000000'), deposit(c, acc.c, '1000'), ...acc.u.map((u) => deposit(c, u, '1000000'))]);

  // 600 holds on us accounts, due one second later; placed at their owner directly.
  const cu = api(us.url, key);
  let next = 0;
  await Promise.all(Array.from({ length: 24 }, async () => {
    while (next < BACKLOG) {
      const i = next++;
      const r = await landed((k) => cu.post('/v1/holds', { sourceAccountId: acc.u[i % acc.u.length], destinationAccountId: acc.v, amount: '1', currency: 'USD', expiresInSeconds: 1 }, k));
      if (r.status !== 201) throw new Error(`hold ${i}: ${r.status} ${JSON.stringify(r.body)}`);
    }
  }));
  await us.stop(); // the region is down; with `deny` nobody else may take it

  // 600 transfers into the downed region: debited at the eu source, their credit cannot land.
  const items = Array.from({ length: BACKLOG }, () => ({ sourceAccountId: acc.a, destinationAccountId: acc.v, amount: '1', currency: 'USD' }));
  const batch = await c.post('/v1/transfers/batch', { items });
  expect(batch.status, JSON.stringify(batch.body).slice(0, 500)).toBe(200);
  expect(await count("SELECT count(*) AS n FROM transfers WHERE source_id = $1 AND destination_id = $2 AND state = 'debited'", [acc.a, acc.v])).toBe(BACKLOG);
}, 60_000);

afterAll(async () => {
  await check?.end();
  await cluster?.stopAll();
  await redis?.stopAll();
  await db?.drop();
});

describe.sequential('relay and sweeper fairness behind a backlog they cannot move', () => {
  it('the sweeper expires an eu hold although 600 older due holds of the downed region stay held', async () => {
    // The us node's one sweep at its start can come late on a loaded machine and release a few
    // of the first holds placed: what matters is a due backlog past one pass (500 rows).
    const stuck = await count("SELECT count(*) AS n FROM holds WHERE state = 'held' AND destination_id = $1", [acc.v]);
    expect(stuck).toBeGreaterThan(500);
    // The last of them were placed a moment ago, due one second after: wait until all are due.
    await waitFor('the whole backlog to be due', 10_000, async () =>
      (await count("SELECT count(*) AS n FROM holds WHERE state = 'held' AND expires_at < now() AND destination_id = $1", [acc.v])) === stuck ? true : undefined, 100);
    const c = api(eu.url, key);
    const h = await landed((k) => c.post('/v1/holds', { sourceAccountId: acc.c, destinationAccountId: acc.b, amount: '40', currency: 'USD', expiresInSeconds: 1 }, k));
    expect(h.status).toBe(201);
    await waitFor('the unrelated eu hold to be expired by the sweeper', 15_000, async () =>
      ((await c.get(`/v1/holds/${h.body.id}`)).body.state === 'expired' ? true : undefined), 200);
    expect((await c.get(`/v1/accounts/${acc.c}`)).body).toMatchObject({ balance: '1000', held: '0' });
    // The downed region's holds were not touched by a node that does not own them.
    expect(await count("SELECT count(*) AS n FROM holds WHERE state = 'held' AND destination_id = $1", [acc.v])).toBe(stuck);
  }, 60_000);

  it('the relay re-delivers an eu-to-eu credit that a kill -9 interrupted, behind 600 older transfers it cannot deliver', async () => {
    // A node whose commits wait 2.5 s after deciding: the debit commits, then the credit waits.
    await eu.stop();
    const slow = await cluster.addNode('eu', { nodeId: eu.nodeId, env: { FAULT_COMMIT_DELAY_MS: '2500' } });
    const c = api(slow.url, key);
    void landed((k) => c.post('/v1/transfers', { sourceAccountId: acc.a, destinationAccountId: acc.b, amount: '7', currency: 'USD' }, k)).catch(() => undefined);
    const id = await waitFor('the debit of the eu-to-eu transfer', 30_000, async () =>
      (await check.query<{ id: string }>("SELECT id FROM transfers WHERE source_id = $1 AND destination_id = $2 AND state = 'debited'", [acc.a, acc.b])).rows[0]?.id, 25);
    await slow.kill('SIGKILL'); // between the debit and the credit
    expect(await count("SELECT count(*) AS n FROM journal WHERE transfer_id = $1 AND kind = 'credit'", [id])).toBe(0);

    eu = await cluster.addNode('eu', { nodeId: eu.nodeId });
    await waitFor(`transfer ${id} to be settled by the relay`, 20_000, async () =>
      ((await check.query<{ state: string }>('SELECT state FROM transfers WHERE id = $1', [id])).rows[0]?.state === 'settled' ? true : undefined), 200);
    expect(await count("SELECT count(*) AS n FROM journal WHERE transfer_id = $1 AND kind = 'credit'", [id])).toBe(1);
    expect((await api(eu.url, key).get(`/v1/accounts/${acc.b}`)).body.balance).toBe('7');
    expect(await count("SELECT count(*) AS n FROM transfers WHERE destination_id = $1 AND state = 'debited'", [acc.v])).toBe(BACKLOG);
  }, 60_000);

  it('once the region is back, its backlog drains: every transfer settles once and every due hold is released', async () => {
    await cluster.addNode('us', { nodeId: 'us-1' });
    await waitFor('the backlog into the downed region to settle', 45_000, async () =>
      (await count("SELECT count(*) AS n FROM transfers WHERE destination_id = $1 AND state <> 'settled'", [acc.v])) === 0 ? true : undefined, 500);
    await waitFor('the due holds of the downed region to be released', 20_000, async () =>
      (await count("SELECT count(*) AS n FROM holds WHERE destination_id = $1 AND state = 'held'", [acc.v])) === 0 ? true : undefined, 500);
    expect(await count("SELECT count(*) AS n FROM journal WHERE account_id = $1 AND kind = 'credit'", [acc.v])).toBe(BACKLOG);
    const sums = await check.query<{ s: string }>("SELECT (SELECT coalesce(sum(amount), 0) FROM journal) + (SELECT coalesce(sum(amount), 0) FROM transfers WHERE state IN ('debited', 'refused')) AS s");
    expect(sums.rows[0]!.s).toBe('0');
  }, 60_000);
});
