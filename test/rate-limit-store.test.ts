// The shared rate-limit counter taken in runs (src/http/rate-limit-store.ts), on the real
// Redis: two nodes' stores on one key never admit more than the limit in a window together,
// a small limit is counted request by request, a busy node reserves runs (Redis's total moves
// in steps) and admits from them, a refusal reads as exceeded, and the next window admits again.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyRateLimitStore } from '@fastify/rate-limit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leasedRedisStore } from '../src/http/rate-limit-store.ts';
import { requireRedis } from './helpers/prereq.ts';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const WINDOW_MS = 1_000;
let redis: Redis[] = [];
let prefix = '';

interface Counted { admitted: number; refused: number; currents: number[] }

/** `n` requests on `key` at once, spread round-robin over the stores; what they were answered. */
async function burst(stores: FastifyRateLimitStore[], key: string, n: number, max: number): Promise<Counted> {
  const answers = await Promise.all(Array.from({ length: n }, (_, i) => new Promise<{ current: number; ttl: number }>((resolve, reject) => {
    stores[i % stores.length]!.incr(key, (err, res) => (err || !res ? reject(err ?? new Error('no answer')) : resolve(res)), WINDOW_MS, max);
  })));
  const admitted = answers.filter((a) => a.current <= max);
  for (const a of answers) expect(a.ttl).toBeLessThanOrEqual(WINDOW_MS);
  return { admitted: admitted.length, refused: answers.length - admitted.length, currents: admitted.map((a) => a.current) };
}

/** Two nodes: a store each, on a Redis connection each. */
function twoNodes(): FastifyRateLimitStore[] {
  return redis.map((r) => new (leasedRedisStore(r, prefix))());
}

/** Retries a scenario whose requests must fall in one window, if the machine stretched it past one. */
async function inOneWindow(run: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const started = performance.now();
    try {
      return await run();
    } catch (err) {
      if (attempt >= 3 || performance.now() - started < WINDOW_MS * 0.8) throw err;
    }
  }
}

beforeAll(async () => {
  await requireRedis(REDIS_URL);
  redis = [new Redis(REDIS_URL), new Redis(REDIS_URL)];
  prefix = `geopay-test-${randomBytes(6).toString('hex')}:`;
});

afterAll(async () => {
  const keys = await redis[0]?.keys(`${prefix}*`);
  if (keys?.length) await redis[0]!.del(...keys);
  for (const r of redis) r.disconnect();
});

describe('the rate-limit counter taken in runs', () => {
  it('two nodes never admit more than the limit in one window together, and admit all of it when asked for more', async () => {
    await inOneWindow(async () => {
      const key = `big-${randomBytes(4).toString('hex')}`;
      const stores = twoNodes();
      const r = await burst(stores, key, 3_000, 1_000);
      expect(r.admitted).toBe(1_000);
      expect(r.refused).toBe(2_000);
      // Each admitted request holds its own position in the window, none past the limit.
      expect(new Set(r.currents).size).toBe(1_000);
      expect(Math.max(...r.currents)).toBeLessThanOrEqual(1_000);
      // Redis holds at least what was admitted (runs reserved past the limit count there too).
      const total = Number(await redis[0]!.get(`${prefix}${key}`));
      expect(total).toBeGreaterThanOrEqual(1_000);
    });
  });

  it('a busy node reserves runs: a few Redis round trips carry many requests', async () => {
    await inOneWindow(async () => {
      const key = `runs-${randomBytes(4).toString('hex')}`;
      const [store] = twoNodes();
      const monitor = await redis[1]!.duplicate().monitor();
      let reservations = 0;
      monitor.on('monitor', (_time: string, args: string[]) => { if (args.includes(`${prefix}${key}`) && /^evalsha$|^eval$/i.test(args[0] ?? '')) reservations += 1; });
      const r = await burst([store!], key, 500, 1_000_000);
      await sleep(50);
      monitor.disconnect();
      expect(r.admitted).toBe(500);
      expect(reservations, 'reservations for 500 requests').toBeGreaterThan(0);
      expect(reservations, 'reservations for 500 requests').toBeLessThan(50);
    });
  });

  it('a small limit is counted request by request, and its window ends: the next admits again', async () => {
    await inOneWindow(async () => {
      const key = `small-${randomBytes(4).toString('hex')}`;
      const stores = twoNodes();
      const first = await burst(stores, key, 12, 5);
      expect(first.admitted).toBe(5);
      expect(first.refused).toBe(7);
      expect(Number(await redis[0]!.get(`${prefix}${key}`))).toBeLessThanOrEqual(12);
      await sleep(WINDOW_MS + 100);
      const next = await burst(stores, key, 12, 5);
      expect(next.admitted).toBe(5);
    });
  });
});
