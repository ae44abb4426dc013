// Per-tenant rate limits: separate read and write budgets per tenant, 429 rate_limited with
// Retry-After and X-RateLimit-* headers, per-tenant overrides, a budget shared by two nodes
// through Redis, and a Redis that dies or hangs letting requests through (fail open) quickly.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { startNode } from '../src/node.ts';
import type { GeopayNode } from '../src/node.ts';
import { requireRedis, requireRedisServerBinary } from './helpers/prereq.ts';

const LIMITS = { rateLimitReadsPerS: 3, rateLimitWritesPerS: 3 };
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** This run's keys in a shared Redis: parallel files and runs never count each other's requests. */
const prefix = () => `geopay-test-${randomBytes(6).toString('hex')}:`;

/** A tenant and its key. The admin key is limited too (3 writes/s here): wait out any 429. */
async function makeTenant(t: TestNode, name: string): Promise<{ id: string; key: string }> {
  const patient = async (method: string, url: string, opts: Parameters<TestNode['call']>[2]) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const r = await t.call(method, url, opts);
      if (r.status !== 429) return r;
      await sleep(Number(r.headers['retry-after']) * 1_000);
    }
    throw new Error(`${method} ${url}: still rate limited`);
  };
  const tr = await patient('POST', '/v1/tenants', { key: t.adminKey, idem: idem(), body: { name } });
  expect(tr.status).toBe(201);
  const kr = await patient('POST', `/v1/tenants/${tr.body.id}/keys`, { key: t.adminKey, idem: idem() });
  expect(kr.status).toBe(201);
  return { id: tr.body.id, key: kr.body.key };
}

const openAccounts = (t: TestNode, key: string, n: number) =>
  Promise.all(Array.from({ length: n }, () => t.call('POST', '/v1/accounts', { key, idem: idem(), body: { currency: 'USD' } })));
/** A read that touches no actor (the id is well-formed and unknown): 404, counted like any GET. */
const readOn = (app: GeopayNode['app'], key: string) =>
  app.inject({ method: 'GET', url: '/v1/transfers/trf_00000000000000000000000000000000', headers: { authorization: `Bearer ${key}` } });
const statuses = (rs: { status: number }[]) => rs.map((r) => r.status).sort();

function expectRateLimited(r: { status: number; body: any; headers: Record<string, unknown> }, limit: number): void {
  expect(r.status).toBe(429);
  expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(r.body).toMatchObject({ code: 'rate_limited', status: 429, type: 'https://geopay.dev/errors/rate_limited' });
  expect(r.body.detail).toMatch(/per second/);
  expect(r.headers['retry-after']).toBe('1'); // windows are one second long
  expect(r.headers['x-ratelimit-limit']).toBe(String(limit));
  expect(r.headers['x-ratelimit-remaining']).toBe('0');
  expect(Number(r.headers['x-ratelimit-reset'])).toBeGreaterThanOrEqual(0);
}

/**
 * Runs a scenario whose steps must fall in one one-second window, which `opened` marks (the
 * tenant's first request). A run that failed after the machine stretched it past the window is
 * run again with fresh tenants, at most 3 times; a run that failed inside the window fails the test.
 */
async function inOneWindow<T>(run: (attempt: number, opened: () => void) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    let openedAt = Infinity;
    try {
      return await run(attempt, () => { openedAt = performance.now(); });
    } catch (err) {
      if (attempt >= 3 || performance.now() - openedAt < 900) throw err;
    }
  }
}

describe('rate limits in memory (no Redis)', () => {
  let t: TestNode;
  beforeAll(async () => { t = await startTestNode('ratelimit', LIMITS); });
  afterAll(async () => { await t?.close(); });

  it('throttles a tenant over its write budget, not another tenant, and not its reads', async () => {
    const a = await inOneWindow(async (attempt, opened) => {
      const a = await makeTenant(t, `a${attempt}`);
      const b = await makeTenant(t, `b${attempt}`);
      opened();
      const acc = (await openAccounts(t, a.key, 1))[0]!;
      expect(acc.status).toBe(201);
      expect(acc.headers['x-ratelimit-limit']).toBe('3');
      expect(acc.headers['x-ratelimit-remaining']).toBe('2');

      // A burst in one tick after a first request: each must see its own count (the plugin's
      // LocalStore shares one counter object, and refused this whole burst).
      const burst = await openAccounts(t, a.key, 4);
      expect(statuses(burst)).toEqual([201, 201, 429, 429]);
      expectRateLimited(burst.find((r) => r.status === 429)!, 3);
      // Nothing was done for the refused ones: A has exactly the three accounts that were answered 201.
      const { rows } = await t.node.pool.query<{ n: bigint }>('SELECT count(*) AS n FROM accounts WHERE tenant_id = $1', [a.id]);
      expect(rows[0]!.n).toBe(3n);

      // Same second: B writes, A reads (its own budget), A still may not write.
      expect((await openAccounts(t, b.key, 1))[0]!.status).toBe(201);
      const read = await t.call('GET', `/v1/accounts/${acc.body.id}`, { key: a.key });
      expect(read.status).toBe(200);
      expect(read.headers['x-ratelimit-remaining']).toBe('2');
      expectRateLimited((await openAccounts(t, a.key, 1))[0]!, 3);
      return a;
    });

    // The budget refills after Retry-After.
    await sleep(1_100);
    expect((await openAccounts(t, a.key, 1))[0]!.status).toBe(201);
  });

  it('runs after authentication: a bad key is 401 however often, public routes are not limited', async () => {
    const bad = await Promise.all(Array.from({ length: 8 }, () => t.call('GET', '/v1/accounts/acc_x', { key: 'gp_tenant_nope' })));
    expect(bad.map((r) => r.body.code)).toEqual(Array(8).fill('unauthorized'));
    const health = await Promise.all(Array.from({ length: 8 }, () => t.call('GET', '/healthz')));
    expect(health.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(health[0]!.headers['x-ratelimit-limit']).toBeUndefined();
  });

  it('a per-tenant override raises one tenant\'s limit; null puts the default back', async () => {
    const c = await inOneWindow(async (attempt, opened) => {
      const c = await makeTenant(t, `c${attempt}`);
      const d = await makeTenant(t, `d${attempt}`);
      await sleep(1_100); // the admin's write budget, spent on the tenants above
      const put = await t.call('PUT', `/v1/tenants/${c.id}/limits`, { key: t.adminKey, body: { readsPerS: null, writesPerS: 8 } });
      expect(put.status).toBe(200);
      expect(put.body).toEqual({ tenantId: c.id, readsPerS: null, writesPerS: 8 });
      expect((await t.call('GET', `/v1/tenants/${c.id}/limits`, { key: t.adminKey })).body).toEqual({ tenantId: c.id, readsPerS: null, writesPerS: 8 });

      opened();
      const [cs, ds] = await Promise.all([openAccounts(t, c.key, 8), openAccounts(t, d.key, 5)]);
      expect(statuses(cs)).toEqual(Array(8).fill(201));
      expect(cs[0]!.headers['x-ratelimit-limit']).toBe('8');
      expect(statuses(ds)).toEqual([201, 201, 201, 429, 429]);
      expectRateLimited((await openAccounts(t, c.key, 1))[0]!, 8);
      return c;
    });

    await sleep(1_100);
    expect((await t.call('PUT', `/v1/tenants/${c.id}/limits`, { key: t.adminKey, body: { readsPerS: null, writesPerS: null } })).status).toBe(200);
    expect(statuses(await openAccounts(t, c.key, 4))).toEqual([201, 201, 201, 429]);
  });

  it('PUT /v1/tenants/:id/limits is admin only and validated', async () => {
    await sleep(1_100);
    const e = await makeTenant(t, 'e');
    const put = (key: string, id: string, body: unknown) => t.call('PUT', `/v1/tenants/${id}/limits`, { key, body });
    expect((await put(e.key, e.id, { readsPerS: 5, writesPerS: 5 })).body.code).toBe('forbidden');
    expect((await put(t.adminKey, e.id, { readsPerS: 0, writesPerS: 5 })).body.code).toBe('validation_failed');
    await sleep(1_100);
    expect((await put(t.adminKey, e.id, { readsPerS: 5 })).body.code).toBe('validation_failed');
    expect((await put(t.adminKey, e.id, { readsPerS: '5', writesPerS: 5 })).body.code).toBe('validation_failed');
    expect((await put(t.adminKey, 'ten_00000000000000000000000000000000', { readsPerS: 5, writesPerS: 5 })).body.code).toBe('tenant_not_found');
    const { rows } = await t.node.pool.query('SELECT reads_per_s, writes_per_s FROM tenants WHERE id = $1', [e.id]);
    expect(rows[0]).toEqual({ reads_per_s: null, writes_per_s: null });
  });
});

describe('rate limits in Redis', () => {
  let t: TestNode;
  let n2: GeopayNode | undefined;
  const keyPrefix = prefix();
  beforeAll(() => requireRedis(REDIS_URL));
  beforeAll(async () => {
    t = await startTestNode('ratelimit_redis', { ...LIMITS, redisUrls: REDIS_URL, redisKeyPrefix: keyPrefix });
  });
  afterAll(async () => {
    await n2?.stop();
    await t?.close();
  });

  it('two nodes on one database share a tenant\'s budget', async () => {
    const a = await makeTenant(t, 'a');
    n2 = await startNode({ ...t.cfg, port: 0, nodeId: 'n2' });
    const first = await Promise.all([readOn(t.node.app, a.key), readOn(t.node.app, a.key), readOn(n2.app, a.key)]);
    expect(first.map((r) => r.statusCode)).toEqual([404, 404, 404]);
    // Three reads spent across the two nodes: the fourth is refused on either.
    const fourth = await readOn(n2.app, a.key);
    expect(fourth.statusCode).toBe(429);
    expect(JSON.parse(fourth.body).code).toBe('rate_limited');
    expect((await readOn(t.node.app, a.key)).statusCode).toBe(429);
    // The counter is in Redis under this run's prefix: at least the three admitted were reserved
    // there (a node that saw the window spent refuses without asking again).
    const redis = new Redis(REDIS_URL);
    try {
      expect(Number(await redis.get(`${keyPrefix}ratelimit:${a.id}:read`))).toBeGreaterThanOrEqual(3);
    } finally {
      redis.disconnect();
    }
  });
});

/** A free TCP port on 127.0.0.1 (closed again, for redis-server to take). */
async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (typeof addr !== 'object' || !addr) throw new Error('no port');
  return addr.port;
}

/** A redis-server of this test's own, on `port`; resolves once it accepts connections. */
async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  for (let i = 0; i < 100 && !out.includes('Ready to accept connections'); i++) {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${out}`);
    await sleep(50);
  }
  if (!out.includes('Ready to accept connections')) throw new Error(`redis-server did not start: ${out}`);
  return child;
}

async function killRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

describe('a Redis that stops answering', () => {
  let t: TestNode;
  let redis: ChildProcess | undefined;
  let port: number;
  beforeAll(requireRedisServerBinary);
  beforeAll(async () => {
    port = await freePort();
    redis = await startRedis(port);
    t = await startTestNode('ratelimit_redis_down', {
      ...LIMITS, redisUrls: `redis://127.0.0.1:${port}`, redisKeyPrefix: prefix(), redisCommandTimeoutMs: 100,
    });
  });
  afterAll(async () => {
    if (redis) await killRedis(redis);
    await t?.close();
  });

  it('fails open within the command timeout when hung or dead, and limits again once back', async () => {
    const a = await makeTenant(t, 'a');
    const reads = async (n: number) => {
      const t0 = Date.now();
      const rs = await Promise.all(Array.from({ length: n }, () => readOn(t.node.app, a.key)));
      return { codes: rs.map((r) => r.statusCode).sort(), ms: Date.now() - t0 };
    };
    // Limited through this Redis while it is up.
    expect((await reads(5)).codes).toEqual([404, 404, 404, 429, 429]);

    // Hung (stopped): every request waits at most the command timeout, then goes through.
    redis!.kill('SIGSTOP');
    await sleep(1_100);
    const hung = await reads(6);
    expect(hung.codes).toEqual(Array(6).fill(404));
    expect(hung.ms).toBeLessThan(1_500);

    // Dead: requests go through at once, reads and writes alike.
    await killRedis(redis!);
    const dead = await reads(6);
    expect(dead.codes).toEqual(Array(6).fill(404));
    expect(dead.ms).toBeLessThan(1_000);
    expect(statuses(await openAccounts(t, a.key, 5))).toEqual(Array(5).fill(201));

    // Back on the same port: the client reconnects (within 2 s) and limits apply again.
    redis = await startRedis(port);
    let limited = false;
    for (let i = 0; i < 40 && !limited; i++) {
      await sleep(250);
      limited = (await reads(5)).codes.includes(429);
    }
    expect(limited).toBe(true);
  });
});
