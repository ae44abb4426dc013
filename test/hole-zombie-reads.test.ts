// Issue 9, point 5: a zombie single node must not serve stale reads. During a deploy overlap
// process 2 starts on the same database and bumps every shard's epoch; process 1, which has
// the account's actor resident, must then answer a GET with process 2's balance or a
// retryable 503, never the balance it still holds in memory. Real processes, real PostgreSQL.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoundedCheck } from '../src/cluster/bounded-check.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { api, startServer, type Api, type ServerProcess } from './helpers/server-process.ts';

/** The staleness bound P1 runs with (EPOCH_CHECK_MS); the test reads after a few of them. */
const boundMs = 300;

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
let db: TestDatabase;
const servers: ServerProcess[] = [];

beforeAll(async () => {
  db = await createTestDatabase('hole_zombie_reads');
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.kill()));
  await db?.drop();
});

async function start(nodeId: string): Promise<ServerProcess> {
  const s = await startServer({ databaseUrl: db.url, adminKey, env: { NODE_ID: nodeId, EPOCH_CHECK_MS: String(boundMs) } });
  servers.push(s);
  return s;
}

async function tenantKey(admin: Api): Promise<string> {
  const t = await admin.post('/v1/tenants', { name: 'zombie' });
  expect(t.status).toBe(201);
  const k = await admin.post(`/v1/tenants/${t.body.id}/keys`);
  expect(k.status).toBe(201);
  return k.body.key as string;
}

describe('hole 5: reads of a zombie single node', () => {
  it('after P2 took over, a GET through P1 answers P2\'s balance or a retryable 503, never the old balance', async () => {
    const p1 = await start('p1');
    const key = await tenantKey(api(p1.url, adminKey));
    const t1 = api(p1.url, key);
    const opened = await t1.post('/v1/accounts', { currency: 'USD' });
    expect(opened.status).toBe(201);
    const id = opened.body.id as string;
    expect((await t1.post('/v1/deposits', { accountId: id, amount: '100', currency: 'USD' })).status).toBe(201);
    // The actor is resident in P1 with balance 100.
    expect((await t1.get(`/v1/accounts/${id}`)).body.balance).toBe('100');

    const p2 = await start('p2');
    const t2 = api(p2.url, key);
    expect((await t2.post('/v1/deposits', { accountId: id, amount: '50', currency: 'USD' })).status).toBe(201);
    expect((await t2.get(`/v1/accounts/${id}`)).body).toMatchObject({ balance: '150' });

    await sleep(3 * boundMs);
    for (let i = 0; i < 5; i++) {
      const r = await t1.get(`/v1/accounts/${id}`);
      if (r.status === 503) {
        expect(r.body.code).toBe('shard_unavailable');
        expect(r.headers['retry-after']).toBeDefined();
      } else {
        expect(r.status).toBe(200);
        expect(r.body.balance, 'P1 answered a balance P2 has moved past').toBe('150');
      }
      await sleep(50);
    }
    // P2 is unaffected: it owns the shard and answers the current balance.
    expect((await t2.get(`/v1/accounts/${id}`)).body.balance).toBe('150');
  });
});

describe('hole 5: the staleness bound of a single node\'s reads (BoundedCheck)', () => {
  /** A check whose completions the test controls, on a clock the test moves. */
  const rig = (boundMs: number) => {
    let now = 0;
    const calls: { startedAt: number; finish: () => void; fail: (e: Error) => void }[] = [];
    const check = new BoundedCheck(boundMs, () => new Promise<void>((finish, fail) => { calls.push({ startedAt: now, finish, fail }); }), () => now);
    return { check, calls, advance: (ms: number) => { now += ms; } };
  };
  const flush = () => new Promise((r) => setImmediate(r));

  it('a read waits for a check when none started within the bound, and concurrent reads share one', async () => {
    const { check, calls, advance } = rig(100);
    let served = 0;
    const reads = [check.fresh(), check.fresh()].map((p) => p.then(() => { served++; }));
    await flush();
    expect(calls).toHaveLength(1);
    expect(served).toBe(0);
    calls[0]!.finish();
    await Promise.all(reads);
    expect(served).toBe(2);
    advance(100);
    await check.fresh(); // the check started exactly 100 ms ago: still within the bound
    expect(calls).toHaveLength(1);
    advance(1);
    const late = check.fresh();
    await flush();
    expect(calls, 'a read past the bound re-checks first').toHaveLength(2);
    calls[1]!.finish();
    await late;
  });

  it('a check that started too long ago does not count, and never runs beside another', async () => {
    const { check, calls, advance } = rig(100);
    const first = check.fresh();
    await flush();
    advance(150); // the database is slow: the running check is now older than the bound
    const second = check.fresh();
    await flush();
    expect(calls, 'one query at a time').toHaveLength(1);
    calls[0]!.finish();
    await first;
    await flush();
    expect(calls).toHaveLength(2);
    expect(calls[1]!.startedAt).toBe(150);
    calls[1]!.finish();
    await second;
  });

  it('a failed check fails the read, and the next read checks again', async () => {
    const { check, calls } = rig(100);
    const read = check.fresh();
    await flush();
    calls[0]!.fail(new Error('database down'));
    await expect(read).rejects.toThrow('database down');
    const retry = check.fresh();
    await flush();
    expect(calls).toHaveLength(2);
    calls[1]!.finish();
    await retry;
  });
});
