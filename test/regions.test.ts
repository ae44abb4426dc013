// Regions own their data, end to end with real processes: three PostgreSQL instances started
// and stopped by this file (one per region: eu, us, ap), 3 Redis masters, a node per region.
// Money crosses regions only as saga legs between the databases. The file stops us's
// database for 20 s under a stream of transfers, then kills us's node and lets another
// region's node take its shards in us's database (REGION_FAILOVER=allow), then brings the
// node back, which takes them back by hand-over. After each, the cross-database checker
// passes, every acknowledged transfer is there exactly once, and each region's database holds
// its own region's rows only.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkRegions, formatResult } from '../bench/checker.ts';
import type { RequestRecord } from '../bench/lib/request-log.ts';
import { startCluster, startRedisMasters, waitFor } from './helpers/cluster.ts';
import type { LocalCluster, RedisMasters } from './helpers/cluster.ts';
import { startPostgresInstances } from './helpers/postgres-instances.ts';
import type { PgInstance, PgInstances } from './helpers/postgres-instances.ts';
import { api } from './helpers/server-process.ts';

const REGIONS = ['eu', 'us', 'ap'] as const;
type RegionName = (typeof REGIONS)[number];
const ACCOUNTS_PER_REGION = 4;
const FUNDING = 1_000_000;
const OUTAGE_MS = 20_000;

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
let pgs: PgInstances | undefined;
let redis: RedisMasters | undefined;
let cluster: LocalCluster | undefined;
const sql = {} as Record<RegionName, pg.Pool>;
const instance = {} as Record<RegionName, PgInstance>;
const accounts = {} as Record<RegionName, string[]>;
let tenantId = '';
let tenantKey = '';
/** Every acknowledged transfer and deposit, as the checker reads a run's request log. */
const acknowledged: RequestRecord[] = [];

const int8AsBigInt = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? (v: string) => BigInt(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

beforeAll(async () => {
  pgs = await startPostgresInstances(3, { namePrefix: 'geopay-regions' });
  REGIONS.forEach((r, i) => {
    instance[r] = pgs!.instances[i]!;
    sql[r] = new pg.Pool({ connectionString: instance[r].url, max: 2, types: int8AsBigInt });
    // A stopped instance breaks idle connections; the pool drops them and reconnects.
    sql[r].on('error', () => undefined);
  });
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: instance.eu.url, adminKey, regions: { eu: 1, us: 1, ap: 1 }, redisUrls: redis.urls,
    regionDatabases: Object.fromEntries(REGIONS.map((r) => [r, instance[r].url])),
    env: {
      LEASE_TTL_MS: '2000', SHARD_BUCKETS: '4', REGION_FAILOVER: 'allow', REGION_FAILOVER_GRACE_MS: '2000',
      RELAY_MIN_AGE_MS: '500', RELAY_INTERVAL_MS: '250', RELAY_MAX_BACKOFF_MS: '1000', PG_POOL_MAX: '6',
      REDIS_KEY_PREFIX: `rg${randomBytes(3).toString('hex')}:`,
    },
  });
  const admin = api(node('eu').url, adminKey);
  const tenant = await admin.post('/v1/tenants', { name: 'regions' });
  tenantId = tenant.body.id as string;
  tenantKey = (await admin.post(`/v1/tenants/${tenantId}/keys`)).body.key as string;
  for (const r of REGIONS) {
    accounts[r] = [];
    for (let i = 0; i < ACCOUNTS_PER_REGION; i++) {
      const opened = await landed(r, (k) => client(r).post('/v1/accounts', { currency: 'USD', region: r }, k));
      expect(opened.status, JSON.stringify(opened.body)).toBe(201);
      accounts[r].push(opened.body.id as string);
      const body = { accountId: opened.body.id, amount: String(FUNDING), currency: 'USD' };
      const dep = await landed(r, (k) => client(r).post('/v1/deposits', body, k), 'deposit', body);
      expect(dep.status, JSON.stringify(dep.body)).toBe(201);
    }
  }
}, 180_000);

afterAll(async () => {
  await cluster?.stopAll();
  await redis?.stopAll();
  await Promise.all(Object.values(sql).map((p) => p.end().catch(() => undefined)));
  await pgs?.stopAll();
}, 60_000);

function node(region: RegionName) {
  const n = cluster!.live(region)[0];
  if (!n) throw new Error(`no live node in ${region}`);
  return n;
}

/** A client of the tenant at a live node of `region` (any live node once the region has none). */
function client(region: RegionName) {
  const n = cluster!.live(region)[0] ?? cluster!.live()[0]!;
  return api(n.url, tenantKey);
}

/** Resolves once `cond` holds, polled; fails naming `what` after `ms`. */
const until = (what: string, ms: number, cond: () => Promise<boolean>): Promise<true> => waitFor(what, ms, async () => ((await cond()) ? true : undefined));

const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

function record(op: string, key: string, body: unknown, r: { status: number; body: any }): void {
  if (r.status !== 201 && r.status !== 202) return;
  acknowledged.push({
    ts: new Date().toISOString(), run: 'regions', phase: 'test', engine: 'geopay', tenant: tenantId, op, method: 'POST', path: `/v1/${op}s`,
    key, body, attempt: 1, status: r.status, answer: r.body, ms: 0,
  });
}

/** A careful client: a 503 is retried with the same Idempotency-Key until it lands (bounded). */
async function landed(_region: RegionName, send: (key: string) => Promise<{ status: number; body: any }>, op?: string, body?: unknown): Promise<{ status: number; body: any }> {
  const k = randomUUID();
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await send(k);
    if (r.status !== 503 || Date.now() > deadline) {
      if (op) record(op, k, body, r);
      return r;
    }
    await sleep(200);
  }
}

/** One transfer, one attempt, through a node of the source's region; recorded when acknowledged. */
async function transfer(from: RegionName, to: RegionName, destination = pick(accounts[to])): Promise<{ status: number; body: any; headers: Record<string, unknown> }> {
  const source = pick(accounts[from].filter((a) => a !== destination));
  const body = { sourceAccountId: source, destinationAccountId: destination, amount: String(1 + Math.floor(Math.random() * 100)), currency: 'USD' };
  const key = randomUUID();
  const r = await client(from).post('/v1/transfers', body, key);
  record('transfer', key, body, r);
  return r as { status: number; body: any; headers: Record<string, unknown> };
}

/** Transfers of every region in flight (debited or refused) in its source region's database. */
async function inFlight(): Promise<number> {
  let n = 0;
  for (const r of REGIONS) n += Number((await sql[r].query("SELECT count(*) AS n FROM transfers WHERE state IN ('debited', 'refused')")).rows[0].n);
  return n;
}

async function checkAcrossRegions(): Promise<void> {
  const result = await checkRegions(sql, { requests: acknowledged, settleTimeoutMs: 30_000 });
  expect(result.failures, formatResult(result)).toEqual([]);
  expect(result.ok).toBe(true);
  console.info(formatResult(result).split('\n')[0]);
}

/** Rows of another region in each region's database: none, whatever happened. */
async function residencyViolations(): Promise<string[]> {
  const out: string[] = [];
  for (const r of REGIONS) {
    const own = (col: string) => `${col} !~ '^(acc|ext|sus)_${r}_'`;
    const q = await sql[r].query(
      `SELECT 'journal' AS t, account_id AS id FROM journal WHERE ${own('account_id')}
       UNION ALL SELECT 'accounts', id FROM accounts WHERE ${own('id')} OR region <> $1
       UNION ALL SELECT 'transfers', id FROM transfers WHERE id !~ '^tr_${r}_' OR ${own('source_id')}
       UNION ALL SELECT 'inbound_legs', transfer_id FROM inbound_legs WHERE ${own('account_id')}
       UNION ALL SELECT 'shards', id FROM shards WHERE region <> $1`, [r]);
    for (const row of q.rows) out.push(`${r}: ${row.t} ${row.id}`);
  }
  return out;
}

describe('a database per region', () => {
  it('carries transfers between all regions, each leg in its own region\'s database', async () => {
    // Every region's node pays every account of every region once: each node has read each
    // payee's directory entry (tenant, currency), which an outage of the payee's region needs.
    for (const from of REGIONS) {
      for (const to of REGIONS) {
        for (const destination of accounts[to]) {
          const r = await transfer(from, to, destination);
          expect([201, 202], JSON.stringify(r.body)).toContain(r.status);
        }
      }
    }
    await until('transfers settled', 30_000, async () => (await inFlight()) === 0);
    // A cross-region credit is kept at its destination as an inbound leg; the row is the source's.
    const legs = Number((await sql.us.query('SELECT count(*) AS n FROM inbound_legs')).rows[0].n);
    expect(legs).toBeGreaterThan(0);
    expect(await residencyViolations()).toEqual([]);
    // The cluster map shows every region's shards, each read in its own region's database.
    const map = await api(node('eu').url, adminKey).get('/v1/cluster');
    expect(new Set((map.body.shards as { region: string }[]).map((x) => x.region))).toEqual(new Set(REGIONS));
    await checkAcrossRegions();
  }, 120_000);

  it('a region\'s database down for 20 s stops that region only; transfers into it wait in flight and settle after', async () => {
    await instance.us.stop();
    const into: string[] = [];
    const counts = { domestic: 0, into: 0, outOf: 0 };
    const started = Date.now();
    try {
      while (Date.now() - started < OUTAGE_MS) {
        // eu <-> ap: no error at all.
        const ea = await transfer(pick(['eu', 'ap'] as const), pick(['eu', 'ap'] as const));
        expect([201, 202], `eu/ap transfer: ${JSON.stringify(ea.body)}`).toContain(ea.status);
        counts.domestic++;
        // Into us: accepted, the money visibly in flight at its source.
        const eu = await transfer('eu', 'us');
        expect(eu.status, JSON.stringify(eu.body)).toBe(202);
        expect(eu.body.state).toBe('debited');
        into.push(eu.body.id as string);
        counts.into++;
        // Out of us: a retryable 503 that names the reason.
        const us = await transfer('us', 'eu');
        expect(us.status, JSON.stringify(us.body)).toBe(503);
        expect(us.body.code).toMatch(/^(region_unavailable|shard_unavailable)$/);
        expect(us.headers['retry-after']).toBeDefined();
        counts.outOf++;
        await sleep(100);
      }
    } finally {
      await instance.us.start();
    }
    const back = Date.now();
    expect(counts.into).toBeGreaterThan(5);
    await until('everything in flight settled after us came back', 60_000, async () => (await inFlight()) === 0);
    const settledMs = Date.now() - back;
    for (const id of into) {
      const t = await client('eu').get(`/v1/transfers/${id}`);
      expect(t.body.state, id).toBe('settled');
    }
    console.info(`us database down ${OUTAGE_MS} ms: ${counts.domestic} eu/ap transfers, ${counts.into} eu -> us accepted in flight, ${counts.outOf} out of us refused 503; all settled ${settledMs} ms after it restarted`);
    expect(await residencyViolations()).toEqual([]);
    await checkAcrossRegions();
  }, 180_000);

  it('a region\'s node dies, its database lives: another region writes it at a new epoch, then hands it back', async () => {
    const epochsBefore = new Map((await sql.us.query('SELECT id, epoch FROM shards')).rows.map((r) => [r.id as string, r.epoch as bigint]));
    await node('us').kill('SIGKILL');
    // Another region's node takes us's shards once the grace has passed: a us account pays again.
    const paid = await landed('us', async (k) => {
      const body = { sourceAccountId: accounts.us[0], destinationAccountId: accounts.eu[0], amount: '7', currency: 'USD' };
      const r = await client('eu').post('/v1/transfers', body, k);
      if (r.status === 201 || r.status === 202) record('transfer', k, body, r);
      return r;
    });
    expect([201, 202], JSON.stringify(paid.body)).toContain(paid.status);
    const owners = await sql.us.query<{ id: string; owner: string; epoch: bigint }>('SELECT id, owner, epoch FROM shards');
    const taken = owners.rows.filter((s) => s.owner !== 'us-1');
    expect(taken.length).toBeGreaterThan(0);
    for (const s of taken) {
      expect(['eu-1', 'ap-1']).toContain(s.owner);
      expect(s.epoch > (epochsBefore.get(s.id) ?? 0n)).toBe(true);
    }
    // The posting was written in us's own database, by the node that took the shard.
    const posting = await sql.us.query("SELECT node_id FROM journal WHERE transfer_id = $1 AND kind = 'debit'", [paid.body.id]);
    expect(['eu-1', 'ap-1']).toContain(posting.rows[0]?.node_id);
    expect(Number((await sql.eu.query('SELECT count(*) AS n FROM transfers WHERE id = $1', [paid.body.id])).rows[0].n)).toBe(0);

    // us's node comes back and takes every shard back by hand-over.
    await cluster!.addNode('us', { nodeId: 'us-1' });
    await until('us shards handed back', 60_000, async () => (await sql.us.query("SELECT count(*) AS n FROM shards WHERE owner <> 'us-1'")).rows[0].n === 0n);
    const again = await landed('us', (k) => client('us').post('/v1/transfers', { sourceAccountId: accounts.us[1], destinationAccountId: accounts.ap[0], amount: '3', currency: 'USD' }, k),
      'transfer', { sourceAccountId: accounts.us[1], destinationAccountId: accounts.ap[0], amount: '3', currency: 'USD' });
    expect([201, 202], JSON.stringify(again.body)).toContain(again.status);
    await until('transfers settled', 30_000, async () => (await inFlight()) === 0);
    expect(await residencyViolations()).toEqual([]);
    await checkAcrossRegions();
  }, 180_000);
});
