// Issue 9, point 2: a lease blip must cost a shard one epoch, not a flapping ownership. A node
// writes one shard steadily; the majority of the Redis masters freezes (SIGSTOP) past one
// extension bound, so the node loses the lease, and takes the shard back (epoch + 1) once
// Redis answers again. Writes decided at the old epoch still reach PostgreSQL after that
// (FAULT_COMMIT_DELAY_MS holds each commit between deciding and sending) and are fenced: the
// node must read that fence as the old epoch's, not drop the shard it holds at the new one.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { startCluster, startRedisMasters, waitFor, type LocalCluster, type RedisMasters } from './helpers/cluster.ts';
import { api, type Api } from './helpers/server-process.ts';

const leaseTtlMs = 2_000;
/** Longer than an extension bound (TTL/3 plus the 200 ms command timeout), shorter than the TTL. */
const pauseMs = 1_300;
/**
 * Keeps writes decided at the old epoch in flight until after the shard is taken back: here
 * that is about 3 s after the loss (the frozen masters still hold the old lock until its TTL).
 */
const commitDelayMs = 5_000;
/** One closed-loop writer per account, so each has a batch in flight at any moment. */
const accounts = 10;
const shard = 'eu/0';

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
let db: TestDatabase | undefined;
let redis: RedisMasters | undefined;
let cluster: LocalCluster | undefined;
let sql: pg.Client | undefined;

beforeAll(async () => {
  db = await createTestDatabase('hole_fence_epoch');
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: db.url, adminKey, regions: { eu: 1 }, redisUrls: redis.urls,
    env: {
      LEASE_TTL_MS: String(leaseTtlMs), SHARD_BUCKETS: '1', FAULT_COMMIT_DELAY_MS: String(commitDelayMs),
      REDIS_KEY_PREFIX: `fe${randomBytes(3).toString('hex')}:`,
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

const epochOf = async (): Promise<bigint> => {
  const r = await sql!.query<{ epoch: string }>('SELECT epoch::text FROM shards WHERE id = $1', [shard]);
  return BigInt(r.rows[0]!.epoch);
};

interface Sent { t0: number; t1: number; status: number | string }

/** One closed-loop client: holds of 1 on its own account, so every answer is that account's commit. */
async function writer(client: Api, source: string, destination: string, out: Sent[], stop: () => boolean): Promise<void> {
  while (!stop()) {
    const t0 = Date.now();
    const status = await client.post('/v1/holds', { sourceAccountId: source, destinationAccountId: destination, amount: '1', currency: 'EUR' })
      .then((r) => r.status, (err: unknown) => `err:${(err as { code?: string }).code ?? 'unknown'}`);
    out.push({ t0, t1: Date.now(), status });
    if (status !== 201) await sleep(100);
  }
}

describe('hole 9.2: a fence of an older epoch does not drop the shard', () => {
  it('a Redis pause past one extension bound bumps the epoch once, and writes resume', async () => {
    const node = cluster!.live('eu')[0]!;
    const admin = api(node.url, adminKey);
    const tenant = await admin.post('/v1/tenants', { name: 'fence-epoch' });
    const key = (await admin.post(`/v1/tenants/${tenant.body.id}/keys`)).body.key as string;
    const client = api(node.url, key);
    const open = async (): Promise<string> => {
      const r = await client.post('/v1/accounts', { currency: 'EUR', region: 'eu', overdraftLimit: '1000000' });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      return r.body.id as string;
    };
    // Concurrently: every commit waits the fault delay.
    const [destination, ...sources] = await Promise.all(Array.from({ length: accounts + 1 }, open)) as [string, ...string[]];

    const sent: Sent[] = [];
    let stopped = false;
    const writers = sources.map((s) => writer(client, s, destination, sent, () => stopped));
    await waitFor('steady 201s before the pause', 20_000, () => (sent.filter((s) => s.status === 201).length >= accounts ? true : undefined));
    const before = await epochOf();

    // The majority of the masters freezes; master 0 (the rate limiter's) keeps answering.
    const frozen = [1, 2].map((i) => redis!.pid(i)!);
    const pausedAt = Date.now();
    for (const pid of frozen) process.kill(pid, 'SIGSTOP');
    await sleep(pauseMs);
    for (const pid of frozen) process.kill(pid, 'SIGCONT');
    const resumedAt = Date.now();

    // Long enough for a flapping ownership to show: several commit delays and lease rounds.
    await sleep(14_000);
    stopped = true;
    await Promise.all(writers);
    const after = await epochOf();

    const statuses = (xs: Sent[]) => [...new Set(xs.map((s) => String(s.status)))].join(',');
    const late = sent.filter((s) => s.t0 >= resumedAt + 6_000);
    const log = `epoch ${before} -> ${after}; answers after the pause: ${statuses(sent.filter((s) => s.t0 >= resumedAt))}; in the last 6 s: ${statuses(late)}`;
    console.info(`hole-fence-epoch: ${log}`);
    expect(after - before, `the lease was lost and taken back (${log})`).toBeGreaterThanOrEqual(1n);
    // Writes decided before the pause and answered 503 after it: their commits came after the
    // shard was taken back, at the old epoch, and were fenced. That is the case under test.
    expect(sent.filter((s) => s.t0 < pausedAt && s.t1 > resumedAt && s.status === 503).length, `writes fenced at the old epoch (${log})`).toBeGreaterThan(0);
    expect(after - before, `the shard's epoch climbed at most once (${log})`).toBeLessThanOrEqual(1n);
    expect(late.filter((s) => s.status === 201).length, `writes resumed (${log})`).toBeGreaterThan(0);
    expect(sent.filter((s) => s.status === 500).length, `no 500 (${log})`).toBe(0);
    expect(/shard fenced: a newer owner wrote it/.test(node.output()), 'the node did not drop the shard it holds').toBe(false);
  }, 60_000);
});
