// The group commits run on a pool of their own, planned generically with seq scans off; every
// other query keeps a custom plan per execution. A generic plan is made once per connection,
// from the tables' sizes of that moment: made on a fresh database, with seq scans allowed, it
// would scan the transfers for good. Here every commit's plan is made on empty tables, and the
// payment tables the commits update are never seq-scanned.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { startTestNode } from './helpers/node.ts';
import { poolSizes, startNode } from '../src/node.ts';
import { loadConfig } from '../config/settings.ts';
import type { Region } from '../src/domain/ids.ts';
import type { Pool } from '../src/persistence/db.ts';
import { createPool } from '../src/persistence/db.ts';
import { createTestDatabase } from './helpers/db.ts';
import pino from 'pino';
import { randomBytes } from 'node:crypto';

const logger = pino({ level: 'silent' });

let t: TestNode;
beforeAll(async () => { t = await startTestNode('writer_planning', { pgPoolMax: 6, writerLanes: 2 }); });
afterAll(async () => { await t?.close(); });

async function setting(pool: Pool, name: string): Promise<string> {
  const { rows } = await pool.query<Record<string, string>>(`SHOW ${name}`);
  return Object.values(rows[0]!)[0]!;
}

/** The plans auto_explain reports to the pool's connections (NOTICE), each with its query's text. */
function plansOf(pool: Pool): string[] {
  const plans: string[] = [];
  pool.on('connect', (client) => { client.on('notice', (n) => plans.push(n.message ?? '')); });
  return plans;
}

describe('the writer pool', () => {
  it('splits PG_POOL_MAX between a lane per writer connection and the rest; one connection is shared', () => {
    expect(poolSizes({ pgPoolMax: 16, writerLanes: 2 }, false)).toEqual({ main: 14, writer: 2, lanes: 2 });
    expect(poolSizes({ pgPoolMax: 4, writerLanes: 8 }, false)).toEqual({ main: 1, writer: 3, lanes: 3 });
    expect(poolSizes({ pgPoolMax: 1, writerLanes: 2 }, false)).toEqual({ main: 1, writer: 0, lanes: 1 });
    expect(poolSizes({ pgPoolMax: 16, writerLanes: 2 }, true)).toEqual({ main: 1, writer: 0, lanes: 1 });
  });

  it('plans the commits generically with seq scans off, and every other query per execution', async () => {
    const region = t.node.dbs.home as Region;
    const writer = t.node.dbs.writerPool(region);
    expect(writer).not.toBe(t.node.pool);
    expect(await setting(writer, 'plan_cache_mode')).toBe('force_generic_plan');
    expect(await setting(writer, 'enable_seqscan')).toBe('off');
    expect(await setting(t.node.pool, 'plan_cache_mode')).toBe('force_custom_plan');
    expect(await setting(t.node.pool, 'enable_seqscan')).toBe('on');
  });

  it('commits made with plans of empty tables reach the rows by their indexes', async () => {
    // A database of its own, fresh: the writer's first plans are made while every table is
    // empty. Every plan executed there is reported to its connection (auto_explain, NOTICE).
    const db = await createTestDatabase('writer_planning_fresh');
    const admin = createPool({ connectionString: db.url, max: 1, statementTimeoutMs: 10_000, logger });
    await admin.query(`ALTER DATABASE ${db.name} SET session_preload_libraries = 'auto_explain'`);
    for (const [k, v] of [['auto_explain.log_min_duration', '0'], ['auto_explain.log_level', 'notice'], ['client_min_messages', 'notice']]) {
      await admin.query(`ALTER DATABASE ${db.name} SET ${k} = '${v}'`);
    }
    await admin.end();
    const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
    const cfg = loadConfig({}, {
      databaseUrl: db.url, port: 0, logLevel: 'silent', adminApiKey: adminKey, pgPoolMax: 6, writerLanes: 2,
      rateLimitReadsPerS: 1_000_000, rateLimitWritesPerS: 1_000_000,
    });
    const node = await startNode(cfg, { logger });
    try {
      const writerPool = node.dbs.writerPool(node.dbs.home as Region);
      expect(writerPool.totalCount).toBe(0); // so every connection it makes is listened to
      const plans = plansOf(writerPool);
      const call = async (url: string, key: string, body: unknown): Promise<any> => {
        const res = await node.app.inject({ method: 'POST', url, headers: { authorization: `Bearer ${key}`, 'idempotency-key': randomBytes(8).toString('hex'), 'content-type': 'application/json' }, payload: JSON.stringify(body) });
        if (res.statusCode >= 300) throw new Error(`${url}: ${res.statusCode} ${res.body}`);
        return JSON.parse(res.body);
      };
      const tenant = await call('/v1/tenants', adminKey, { name: 'planning' });
      const { key } = await call(`/v1/tenants/${tenant.id}/keys`, adminKey, {});
      const a = (await call('/v1/accounts', key, { currency: 'USD' })).id;
      const b = (await call('/v1/accounts', key, { currency: 'USD' })).id;
      await call('/v1/deposits', key, { accountId: a, amount: '1000', currency: 'USD' });
      // Each transfer is debited, then credited and settled: the settling commit updates its
      // transfer row by id, and the credit's reads the destination's journal and keys.
      for (let i = 0; i < 10; i++) await call('/v1/transfers', key, { sourceAccountId: a, destinationAccountId: b, amount: '10', currency: 'USD' });
      const commits = plans.filter((p) => p.includes('Query Text:'));
      expect(commits.length).toBeGreaterThanOrEqual(12);
      expect(commits.some((p) => /Update on transfers/.test(p))).toBe(true);
      expect(commits.filter((p) => p.includes('Seq Scan'))).toEqual([]);
    } finally {
      await node.stop().catch(() => undefined);
      await db.drop();
    }
  });
});
