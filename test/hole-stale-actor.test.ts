// Issue 9, point 3: a shard that comes back (A -> B -> A) must not be served by actors A kept
// from before. A hand-over whose drain times out (a commit still in flight, held by
// FAULT_COMMIT_DELAY_MS, past the tiny SHUTDOWN_TIMEOUT_MS that bounds the hand-over) leaves
// the account's actor resident on A; B then takes deposits; when B leaves and A takes the
// shard back, a withdrawal on A that only the true balance covers must succeed: no stale
// insufficient_funds stored under the client's key, no 500 from a journal key collision.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { place } from '../src/cluster/cluster-ownership.ts';
import type { ShardId } from '../src/domain/ids.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { idem, startTestNode, type TestNode } from './helpers/node.ts';
import { startCluster, startRedisMasters, waitFor, type ClusterNode, type LocalCluster, type RedisMasters } from './helpers/cluster.ts';
import { api, type ApiResponse } from './helpers/server-process.ts';

const shard = 'eu/0';
/** Longer than the hand-over bound below, so the drain of a busy actor times out. */
const commitDelayMs = 2_000;

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
let db: TestDatabase | undefined;
let redis: RedisMasters | undefined;
let cluster: LocalCluster | undefined;
let sql: pg.Client | undefined;

beforeAll(async () => {
  db = await createTestDatabase('hole_stale_actor');
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: db.url, adminKey, regions: { eu: 1 }, redisUrls: redis.urls,
    env: {
      LEASE_TTL_MS: '2000', SHARD_BUCKETS: '1', HEARTBEAT_MS: '300', TRANSFER_WAIT_MS: '10000',
      // The hand-over bound (node.ts uses SHUTDOWN_TIMEOUT_MS for it), at its minimum.
      SHUTDOWN_TIMEOUT_MS: '100', FAULT_COMMIT_DELAY_MS: String(commitDelayMs),
      // No idle passivation: a stale actor must not be saved by a timer before the test reads it.
      ACTOR_IDLE_MS: '600000',
      REDIS_KEY_PREFIX: `sa${randomBytes(3).toString('hex')}:`,
    },
  });
  sql = new pg.Client({ connectionString: db.url });
  await sql.connect();
}, 60_000);

afterAll(async () => {
  await sql?.end();
  await cluster?.stopAll();
  await redis?.stopAll();
  await db?.drop();
});

const shardRow = async (): Promise<{ epoch: bigint; owner: string }> => {
  const r = await sql!.query<{ epoch: string; owner: string }>('SELECT epoch::text, owner FROM shards WHERE id = $1', [shard]);
  return { epoch: BigInt(r.rows[0]!.epoch), owner: r.rows[0]!.owner };
};

/** A node name that placement gives the shard to over `other` (so joining moves it). */
function winnerOver(other: string): string {
  for (let i = 1; ; i++) {
    const name = `eu-b${i}`;
    if (place([shard as ShardId], [other, name].sort()).get(shard as ShardId) === name) return name;
  }
}

describe('hole 9.3: a re-taken shard is not served by stale actors', () => {
  it('A -> B -> A with deposits on B: a withdrawal on A that only the true balance covers succeeds', async () => {
    const a = cluster!.live('eu')[0]!;
    const admin = api(a.url, adminKey);
    const tenant = await admin.post('/v1/tenants', { name: 'stale-actor' });
    const key = (await admin.post(`/v1/tenants/${tenant.body.id}/keys`)).body.key as string;
    const onA = api(a.url, key);
    const answers: string[] = [];
    const note = (where: string, r: ApiResponse): ApiResponse => {
      answers.push(`${where}:${r.status}${r.body?.code ? `/${r.body.code}` : ''}`);
      return r;
    };
    /** POST with one key until it is answered other than 503 (a shard moving answers 503). */
    const post = async (node: () => ClusterNode, path: string, body: unknown): Promise<ApiResponse> => {
      const idem = randomUUID();
      return waitFor(`POST ${path} answered other than 503`, 30_000, async () => {
        const r = note(path, await api(node().url, key).post(path, body, idem));
        return r.status === 503 ? undefined : r;
      }, 200);
    };
    const balanceOn = async (node: ClusterNode, id: string): Promise<string | undefined> => {
      const r = await api(node.url, key).get(`/v1/accounts/${id}`);
      return r.status === 200 ? (r.body.balance as string) : undefined;
    };

    // Three accounts, each with its own sequential client, started a third of a commit apart:
    // a hand-over finds at most one of them between two commits (that one drains cleanly).
    const open = async (): Promise<string> => (await onA.post('/v1/accounts', { currency: 'EUR', region: 'eu' })).body.id as string;
    const [y, ...xs] = await Promise.all([0, 1, 2, 3].map(open)) as [string, ...string[]];
    await Promise.all(xs.map(async (x) => expect((await post(() => a, '/v1/deposits', { accountId: x, amount: '100', currency: 'EUR' })).status).toBe(201)));

    // Each client keeps a commit of its account's actor in flight on A (a hold touches its
    // source alone) while A holds the shard, and stops once A has handed it over: a request
    // to A then would be forwarded to B and make B take the shard before A's commits land.
    const aHolds = async (): Promise<boolean> => ((await admin.get('/v1/cluster')).body.self.shardsHeld as { shard: string }[]).some((s) => s.shard === shard);
    const holds = xs.map(async (x, i) => {
      await sleep((i * commitDelayMs) / xs.length);
      while (await aHolds()) {
        const r = await onA.post('/v1/holds', { sourceAccountId: x, destinationAccountId: y, amount: '1', currency: 'EUR' }).catch(() => undefined);
        if (r) note('hold', r);
        if (r?.status !== 201) await sleep(200);
      }
    });
    await waitFor('holds committed on A', 20_000, () => (answers.filter((s) => s === 'hold:201').length >= xs.length ? true : undefined))
      .catch((err: unknown) => { throw new Error(`${String(err)}; answers: ${answers.join(' ')}`); });

    // B joins and is given the shard (A hands it over, its drain times out); B rebalances
    // rarely, so it takes the shard only after A's commits in flight have landed.
    const before = await shardRow();
    const b = await cluster!.addNode('eu', { nodeId: winnerOver(a.nodeId), env: { FAULT_COMMIT_DELAY_MS: '0', HEARTBEAT_MS: '5000' } });
    await waitFor(`${b.nodeId} to take the shard`, 30_000, async () => {
      const row = await shardRow();
      return row.owner === b.nodeId && row.epoch > before.epoch ? true : undefined;
    }, 100);
    await Promise.all(holds);

    // Deposits on B: the true balances grow past anything A's old actors know.
    await Promise.all(xs.map(async (x) => {
      expect((await post(() => b, '/v1/deposits', { accountId: x, amount: '1000', currency: 'EUR' })).status).toBe(201);
      await waitFor('B to show the deposit', 10_000, async () => ((await balanceOn(b, x)) === '1100' ? true : undefined));
    }));

    // B leaves: A takes the shard back.
    const onB = await shardRow();
    await b.stop();
    await waitFor(`${a.nodeId} to take the shard back`, 30_000, async () => {
      const row = await shardRow();
      return row.owner === a.nodeId && row.epoch > onB.epoch ? true : undefined;
    }, 100);

    // More than A's old actors hold (100 less their holds), less than the true 1100 less holds.
    const ws = await Promise.all(xs.map((x) => post(() => a, '/v1/withdrawals', { accountId: x, amount: '500', currency: 'EUR' })));
    const log = `answers: ${answers.join(' ')}; A's log: ${/snapshot failed/.test(a.output()) ? 'a snapshot failed after the hand-over' : 'no failed snapshot'}`;
    console.info(`hole-stale-actor: ${log}`);
    expect(ws.map((w) => `${w.status}${w.body?.code ? `/${w.body.code}` : ''}`), `the withdrawals on A (${log})`).toEqual(xs.map(() => '201'));
    expect(answers.filter((s) => /:500/.test(s)), `no 500 (${log})`).toEqual([]);
    const stored = await sql!.query<{ status_code: number | null }>(
      `SELECT status_code FROM idempotency_keys WHERE tenant_id = $1 AND status_code = 422`, [tenant.body.id]);
    expect(stored.rows, `no 422 stored under a key (${log})`).toEqual([]);
    for (const x of xs) {
      await waitFor('A to show the withdrawal', 10_000, async () => ((await balanceOn(a, x)) === '600' ? true : undefined));
    }
    const debits = await sql!.query<{ n: string }>(`SELECT count(*)::text AS n FROM journal WHERE account_id = ANY($1) AND kind = 'debit'`, [xs]);
    expect(debits.rows[0]!.n, 'one debit per withdrawal').toBe(String(xs.length));
  }, 60_000);
});

describe('hole 9.3: a journal key collision reloads the actor', () => {
  let t: TestNode | undefined;
  afterAll(async () => {
    await t?.close();
  });

  it('postings appended behind a resident actor at its own epoch: its next command reloads and succeeds, no 500', async () => {
    t = await startTestNode('hole_stale_collision');
    const { key } = await t.tenant();
    const x = await t.account(key);
    expect((await t.deposit(key, x, '100')).status).toBe(201);
    // The actor is resident at seq 2. Another writer of the same epoch (what a stale owner's
    // successor looks like to it) appends seq 3 and 4: a freeze and an unfreeze, no money.
    const epoch = (await t.node.pool.query<{ epoch: string }>('SELECT epoch::text FROM shards WHERE id = $1', [t.node.registry.shardOf(x as never)])).rows[0]!.epoch;
    await t.node.pool.query(
      `INSERT INTO journal (account_id, seq, kind, transfer_id, amount, balance_after, epoch, node_id, created_at)
       VALUES ($1, 3, 'freeze', NULL, 0, 100, $2, 'elsewhere', now()), ($1, 4, 'unfreeze', NULL, 0, 100, $2, 'elsewhere', now())`, [x, epoch]);

    const w = await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: x, amount: '30', currency: 'USD' } });
    expect(w.status, JSON.stringify(w.body)).toBe(201);
    const rows = await t.node.pool.query<{ seq: string; kind: string; amount: string }>('SELECT seq::text, kind, amount::text FROM journal WHERE account_id = $1 ORDER BY seq', [x]);
    expect(rows.rows.map((r) => `${r.seq}:${r.kind}:${r.amount}`)).toEqual(['1:open:0', '2:credit:100', '3:freeze:0', '4:unfreeze:0', '5:debit:-30']);
    expect((await t.call('GET', `/v1/accounts/${x}`, { key })).body.balance).toBe('70');
  });
});
