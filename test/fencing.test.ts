// The fence itself, across processes: an owner decides a write (its epoch in hand), is frozen
// (SIGSTOP) past its lease, another node takes the shard and writes; when the old owner wakes
// and sends its commit, PostgreSQL rejects it (epoch guard), the old owner answers 503 and
// retires the shard's actors, and no posting carries the old epoch after the new one's first.
// FAULT_COMMIT_DELAY_MS holds the write between decision and commit so the freeze lands there.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
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
  db = await createTestDatabase('fencing');
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: db.url, adminKey, regions: { eu: 2 }, redisUrls: redis.urls,
    env: { LEASE_TTL_MS: '2000', SHARD_BUCKETS: '4', FAULT_COMMIT_DELAY_MS: '1200', REDIS_KEY_PREFIX: `fence${randomBytes(3).toString('hex')}:` },
  });
}, 60_000);

afterAll(async () => {
  for (const n of cluster?.nodes ?? []) if (n.paused) n.sigcont();
  await cluster?.stopAll();
  await redis?.stopAll();
  await db?.drop();
});

describe('fencing across processes', () => {
  it('rejects the commit of an owner that wakes after losing its shard', async () => {
    const [n1, n2] = cluster.live('eu');
    const admin = api(n1!.url, adminKey);
    const tenant = await admin.post('/v1/tenants', { name: 'fence' });
    const key = (await admin.post(`/v1/tenants/${tenant.body.id}/keys`)).body.key as string;
    const c1 = api(n1!.url, key);
    const acc = (await c1.post('/v1/accounts', { currency: 'EUR', region: 'eu' })).body.id as string;
    expect((await c1.post('/v1/deposits', { accountId: acc, amount: '1000', currency: 'EUR' })).status).toBe(201);

    const owner = (await admin.get(`/v1/actors/accounts/${acc}`)).body.owner as { node: string; shard: string; epoch: string };
    const oldNode = cluster.node(owner.node);
    const newNode = oldNode === n1 ? n2! : n1!;
    const shard = owner.shard;
    const oldEpoch = BigInt(owner.epoch);

    // The old owner decides W1 and waits before committing; it is frozen in that wait.
    const w1 = api(oldNode.url, key).post('/v1/withdrawals', { accountId: acc, amount: '10', currency: 'EUR' });
    await sleep(300);
    oldNode.sigstop();
    const check = new pg.Client({ connectionString: db.url });
    await check.connect();
    try {
      const newEpoch = await waitFor('the other node to take the shard', 15_000, async () => {
        const r = await check.query<{ epoch: string; owner: string }>('SELECT epoch::text, owner FROM shards WHERE id = $1', [shard]);
        const row = r.rows[0];
        return row && row.owner === newNode.nodeId && BigInt(row.epoch) > oldEpoch ? BigInt(row.epoch) : undefined;
      }, 100);
      const w2 = await api(newNode.url, key).post('/v1/withdrawals', { accountId: acc, amount: '20', currency: 'EUR' });
      expect(w2.status).toBe(201);

      oldNode.sigcont();
      const r1 = await w1;
      expect(r1.status).toBe(503);
      expect(r1.headers['retry-after']).toBeDefined();
      // The database refused it: the fence, not the old owner's own clock.
      await waitFor('the fenced write in the old owner\'s log', 5_000, () => (/write fenced|shard fenced/.test(oldNode.output()) ? true : undefined));
      expect(oldNode.alive).toBe(true);

      const postings = await check.query<{ seq: string; kind: string; amount: string; epoch: string; node_id: string }>(
        'SELECT seq::text, kind, amount::text, epoch::text, node_id FROM journal WHERE account_id = $1 ORDER BY seq', [acc]);
      const firstNew = postings.rows.findIndex((p) => BigInt(p.epoch) >= newEpoch);
      expect(firstNew).toBeGreaterThan(-1);
      expect(postings.rows.slice(firstNew).every((p) => BigInt(p.epoch) >= newEpoch)).toBe(true);
      expect(postings.rows.filter((p) => p.kind === 'debit').map((p) => [p.amount, p.node_id])).toEqual([['-20', newNode.nodeId]]);
      expect((await api(newNode.url, key).get(`/v1/accounts/${acc}`)).body.balance).toBe('980');
    } finally {
      await check.end();
    }
  }, 90_000);
});
