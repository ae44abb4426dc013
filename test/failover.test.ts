// Region failover, the `allow` choice: when every node of a region is gone for the grace
// time, a node of another region takes its shards (new epochs) and its accounts are served
// again; when the region's node returns, placement gives the shards back by hand-over.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { startCluster, startRedisMasters, waitFor } from './helpers/cluster.ts';
import type { LocalCluster, RedisMasters } from './helpers/cluster.ts';
import { api } from './helpers/server-process.ts';

let db: TestDatabase;
let redis: RedisMasters;
let cluster: LocalCluster;
const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;

beforeAll(async () => {
  db = await createTestDatabase('failover');
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: db.url, adminKey, regions: { eu: 1, us: 1 }, redisUrls: redis.urls,
    env: { LEASE_TTL_MS: '2000', SHARD_BUCKETS: '4', REGION_FAILOVER: 'allow', REGION_FAILOVER_GRACE_MS: '2000', REDIS_KEY_PREFIX: `fo${randomBytes(3).toString('hex')}:` },
  });
}, 60_000);

afterAll(async () => {
  await cluster?.stopAll();
  await redis?.stopAll();
  await db?.drop();
});

/** A careful client: a 503 is retried with the same Idempotency-Key until it lands. */
async function landed(send: (key: string) => Promise<{ status: number; body: any }>): Promise<{ status: number; body: any }> {
  const k = randomBytes(8).toString('hex');
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await send(k);
    if (r.status !== 503 || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 200));
  }
}

describe('region failover (allow)', () => {
  it('serves a downed region from another one, then gives it back', async () => {
    const [eu] = cluster.live('eu');
    const [us] = cluster.live('us');
    const admin = api(eu!.url, adminKey);
    const tenant = await admin.post('/v1/tenants', { name: 'fo' });
    const key = (await admin.post(`/v1/tenants/${tenant.body.id}/keys`)).body.key as string;
    const c = api(eu!.url, key);
    const opened = await landed((k) => c.post('/v1/accounts', { currency: 'USD', region: 'us' }, k));
    expect(opened.status, JSON.stringify(opened.body)).toBe(201);
    const acc = opened.body.id as string;
    const shard = (await admin.get(`/v1/actors/accounts/${acc}`)).body.owner.shard as string;
    const check = new pg.Client({ connectionString: db.url });
    await check.connect();
    try {
      // On a loaded machine the us node can start after the grace time has passed, and the eu
      // node then serves the us shard until placement hands it over: start from the us owner.
      await waitFor('the us node to own its shard', 20_000, async () => {
        const r = await check.query<{ owner: string }>('SELECT owner FROM shards WHERE id = $1', [shard]);
        return r.rows[0]?.owner === us!.nodeId ? true : undefined;
      }, 200);
      expect((await landed((k) => c.post('/v1/deposits', { accountId: acc, amount: '100', currency: 'USD' }, k))).status).toBe(201);

      await us!.stop();
      // Grace (2 s) + lease (2 s) + a placement round: the eu node owns the us shard.
      await waitFor('eu to take the us shard', 15_000, async () => {
        const r = await check.query<{ owner: string }>('SELECT owner FROM shards WHERE id = $1', [shard]);
        return r.rows[0]?.owner === eu!.nodeId ? true : undefined;
      }, 200);
      const d = await landed((k) => c.post('/v1/deposits', { accountId: acc, amount: '5', currency: 'USD' }, k));
      expect(d.status).toBe(201);
      expect((await c.get(`/v1/accounts/${acc}`)).body.balance).toBe('105');

      const back = await cluster.addNode('us', { nodeId: us!.nodeId });
      await waitFor('the us node to take its shard back', 20_000, async () => {
        const r = await check.query<{ owner: string }>('SELECT owner FROM shards WHERE id = $1', [shard]);
        return r.rows[0]?.owner === back.nodeId ? true : undefined;
      }, 200);
      const d2 = await landed((k) => api(back.url, key).post('/v1/deposits', { accountId: acc, amount: '7', currency: 'USD' }, k));
      expect(d2.status).toBe(201);
      expect((await c.get(`/v1/accounts/${acc}`)).body.balance).toBe('112');
      const epochs = await check.query<{ epoch: string; node_id: string }>("SELECT epoch::text, node_id FROM journal WHERE account_id = $1 AND kind = 'credit' ORDER BY seq", [acc]);
      const e = epochs.rows.map((r) => BigInt(r.epoch));
      expect(e.every((x, i) => i === 0 || x >= e[i - 1]!)).toBe(true);
      expect(epochs.rows.map((r) => r.node_id)).toEqual([us!.nodeId, eu!.nodeId, back.nodeId]);
    } finally {
      await check.end();
    }
  }, 90_000);
});
