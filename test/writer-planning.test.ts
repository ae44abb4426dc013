// The group commits run on a pool of their own, planned generically with seq scans off; every
// other query keeps a custom plan per execution. A generic plan is made once per connection,
// from the tables' sizes of that moment: made on a fresh database, with seq scans allowed, it
// would scan the transfers for good. Here every commit's plan is made on empty tables, and the
// payment tables the commits update are never seq-scanned.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { poolSizes } from '../src/node.ts';
import type { Region } from '../src/domain/ids.ts';
import type { Pool } from '../src/persistence/db.ts';
import { createPool } from '../src/persistence/db.ts';
import pino from 'pino';

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
    // A node of its own, on a fresh database: the writer's first plans are made while every
    // table is empty. Every plan executed on a connection opened from here on is reported to
    // it (auto_explain, NOTICE); the writer's pool has opened none yet.
    const fresh = await startTestNode('writer_planning_fresh');
    try {
      const admin = createPool({ connectionString: fresh.db.url, max: 1, statementTimeoutMs: 10_000, logger });
      await admin.query(`ALTER DATABASE ${fresh.db.name} SET session_preload_libraries = 'auto_explain'`);
      for (const [k, v] of [['auto_explain.log_min_duration', '0'], ['auto_explain.log_level', 'notice'], ['client_min_messages', 'notice']]) {
        await admin.query(`ALTER DATABASE ${fresh.db.name} SET ${k} = '${v}'`);
      }
      await admin.end();
      const writerPool = fresh.node.dbs.writerPool(fresh.node.dbs.home as Region);
      expect(writerPool.totalCount).toBe(0); // so every connection it makes is listened to
      const plans = plansOf(writerPool);
      const { key } = await fresh.tenant('planning');
      const a = await fresh.account(key);
      const b = await fresh.account(key);
      expect((await fresh.deposit(key, a, '1000')).status).toBeLessThan(300);
      // Each transfer is debited, then credited and settled: the settling commit updates its
      // transfer row by id, and the credit's reads the destination's journal and keys.
      for (let i = 0; i < 10; i++) {
        const r = await fresh.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: b, amount: '10', currency: 'USD' } });
        expect(r.status).toBeLessThan(300);
      }
      const commits = plans.filter((p) => p.includes('Query Text:'));
      expect(commits.length).toBeGreaterThanOrEqual(12);
      expect(commits.some((p) => /Update on transfers/.test(p))).toBe(true);
      expect(commits.filter((p) => p.includes('Seq Scan'))).toEqual([]);
    } finally {
      await fresh.close();
    }
  });
});
