// Two regions (eu, us) with a database each on the local PostgreSQL, a Redis master, a node per
// region and the legs on the bus: nats-server processes of the caller's count (a cluster with
// routes for more than one, the streams then at R3), and a bus connection of the test's own to
// read the streams. What the legs-on-the-bus tests share. A careful client retries with the same Idempotency-Key until it gets an answer,
// and records every acknowledged movement for the cross-database checker.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { expect } from 'vitest';
import { checkRegions, formatResult } from '../../bench/checker.ts';
import type { RequestRecord } from '../../bench/lib/request-log.ts';
import { startCluster, startRedisMasters, waitFor } from './cluster.ts';
import type { LocalCluster, RedisMasters } from './cluster.ts';
import { createTestDatabase } from './db.ts';
import type { TestDatabase } from './db.ts';
import { api } from './server-process.ts';
import pino from 'pino';
import { connectBus } from '../../src/bus/index.ts';
import type { Bus } from '../../src/bus/index.ts';
import { startNatsServers } from './nats.ts';
import type { NatsServers } from './nats.ts';

export const REGIONS = ['eu', 'us'] as const;
export type RegionName = (typeof REGIONS)[number];
const ACCOUNTS_PER_REGION = 4;
const FUNDING = 1_000_000;
const PATHS = { account: '/v1/accounts', deposit: '/v1/deposits', transfer: '/v1/transfers' } as const;

const int8AsBigInt = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? (v: string) => BigInt(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

export interface BusRegions {
  cluster: LocalCluster;
  nats: NatsServers;
  /** The test's own connection to the bus (stream states). */
  reader: Bus;
  sql: Record<RegionName, pg.Pool>;
  accounts: Record<RegionName, string[]>;
  acknowledged: RequestRecord[];
  /** POSTs until it gets an answer (not a 5xx, not a dropped connection), bounded; records what was acknowledged. */
  landed(region: RegionName, op: keyof typeof PATHS, body: Record<string, unknown>): Promise<{ status: number; body: any }>;
  /** A transfer of a few units between random accounts of the two regions, through the source's node. */
  transfer(from: RegionName, to: RegionName): Promise<{ status: number; body: any }>;
  /** Transfers debited or refused and not yet finished, in both databases. */
  inFlight(): Promise<number>;
  /** Resolves once nothing is in flight; fails after `ms`. */
  settled(ms: number): Promise<void>;
  /** Transfers credited more than once in either database (none, whatever happened). */
  creditedTwice(): Promise<string[]>;
  /** The cross-database checker against every acknowledged request; prints its first line. */
  check(): Promise<void>;
  stop(): Promise<void>;
}

export async function startBusRegions(name: string, natsServers: 1 | 3): Promise<BusRegions> {
  const nats = await startNatsServers(natsServers, { namePrefix: `geopay-${name}` });
  const env = { NATS_URLS: nats.urls.join(','), NATS_REPLICAS: String(natsServers) };
  const dbs = {} as Record<RegionName, TestDatabase>;
  const sql = {} as Record<RegionName, pg.Pool>;
  for (const r of REGIONS) {
    dbs[r] = await createTestDatabase(`${name}_${r}`);
    sql[r] = new pg.Pool({ connectionString: dbs[r].url, max: 2, types: int8AsBigInt });
  }
  let redis: RedisMasters | undefined;
  let cluster: LocalCluster | undefined;
  let reader: Bus | undefined;
  const stop = async () => {
    await reader?.close().catch(() => undefined);
    await cluster?.stopAll();
    await nats.stopAll();
    await redis?.stopAll();
    await Promise.all(Object.values(sql).map((p) => p.end().catch(() => undefined)));
    for (const r of REGIONS) await dbs[r].drop();
  };
  try {
    redis = await startRedisMasters(1);
    const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
    cluster = await startCluster({
      databaseUrl: dbs.eu.url, adminKey, regions: { eu: 1, us: 1 }, redisUrls: redis.urls,
      regionDatabases: Object.fromEntries(REGIONS.map((r) => [r, dbs[r].url])),
      env: {
        LEASE_TTL_MS: '3000', SHARD_BUCKETS: '4', TRANSFER_WAIT_MS: '1000', RELAY_MIN_AGE_MS: '1000', RELAY_INTERVAL_MS: '250',
        RELAY_MAX_BACKOFF_MS: '1000', PG_POOL_MAX: '6', REDIS_KEY_PREFIX: `${name.slice(0, 6)}${randomBytes(3).toString('hex')}:`, ...env,
      },
    });
    const c = cluster;
    reader = await connectBus({ urls: nats.urls, name: `${name}-reader`, logger: pino({ level: 'silent' }) });
    const bus = reader;
    const admin = api(c.live('eu')[0]!.url, adminKey);
    const tenantId = (await admin.post('/v1/tenants', { name })).body.id as string;
    const tenantKey = (await admin.post(`/v1/tenants/${tenantId}/keys`)).body.key as string;
    const acknowledged: RequestRecord[] = [];
    const accounts = { eu: [], us: [] } as Record<RegionName, string[]>;
    const landed: BusRegions['landed'] = async (region, op, body) => {
      const key = randomUUID();
      const deadline = Date.now() + 60_000;
      for (;;) {
        const at = c.live(region)[0] ?? c.live()[0]!;
        const r = await api(at.url, tenantKey).post(PATHS[op], body, key).catch(() => ({ status: 0, body: null }));
        if ((r.status > 0 && r.status < 500) || Date.now() > deadline) {
          if (op !== 'account' && (r.status === 201 || r.status === 202)) {
            acknowledged.push({
              ts: new Date().toISOString(), run: name, phase: 'test', engine: 'geopay', tenant: tenantId, op, method: 'POST', path: PATHS[op],
              key, body, attempt: 1, status: r.status, answer: r.body, ms: 0,
            });
          }
          return r;
        }
        await sleep(100);
      }
    };
    for (const r of REGIONS) {
      for (let i = 0; i < ACCOUNTS_PER_REGION; i++) {
        const opened = await landed(r, 'account', { currency: 'USD', region: r });
        expect(opened.status, JSON.stringify(opened.body)).toBe(201);
        accounts[r].push(opened.body.id as string);
        const dep = await landed(r, 'deposit', { accountId: opened.body.id, amount: String(FUNDING), currency: 'USD' });
        expect(dep.status, JSON.stringify(dep.body)).toBe(201);
      }
    }
    const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
    const inFlight = async () => {
      let n = 0;
      for (const r of REGIONS) n += Number((await sql[r].query("SELECT count(*) AS n FROM transfers WHERE state IN ('debited', 'refused')")).rows[0].n);
      return n;
    };
    return {
      cluster: c, nats, reader: bus, sql, accounts, acknowledged, landed, inFlight, stop,
      transfer: (from, to) => landed(from, 'transfer', { sourceAccountId: pick(accounts[from]), destinationAccountId: pick(accounts[to]), amount: String(1 + Math.floor(Math.random() * 50)), currency: 'USD' }),
      settled: async (ms) => { await waitFor('every transfer settled', ms, async () => ((await inFlight()) === 0 ? true : undefined), 250); },
      async creditedTwice() {
        const out: string[] = [];
        for (const r of REGIONS) {
          const q = await sql[r].query("SELECT transfer_id, count(*) AS n FROM journal WHERE kind = 'credit' GROUP BY transfer_id HAVING count(*) > 1");
          for (const row of q.rows) out.push(`${r}: ${row.transfer_id} credited ${row.n} times`);
        }
        return out;
      },
      async check() {
        const result = await checkRegions(sql, { requests: acknowledged, settleTimeoutMs: 60_000 });
        expect(result.failures, formatResult(result)).toEqual([]);
        console.info(formatResult(result).split('\n')[0]);
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
