// An account's live event stream across the death of the node serving it, with real processes:
// two nodes of one region on one database, 3 Redis masters. A client follows an account's
// events on one node, the node is killed (-9) while payments go on through the other, and the
// client resumes on the other node with Last-Event-ID: exactly the events it missed, in order,
// none twice, none skipped.
import { randomBytes, randomUUID } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, startRedisMasters } from './helpers/cluster.ts';
import type { LocalCluster, RedisMasters } from './helpers/cluster.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { api } from './helpers/server-process.ts';

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
let db: TestDatabase;
let redis: RedisMasters;
let cluster: LocalCluster;

beforeAll(async () => {
  db = await createTestDatabase('sse_failover');
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: db.url, adminKey, regions: { eu: 2 }, redisUrls: redis.urls,
    env: { LEASE_TTL_MS: '2000', SHARD_BUCKETS: '4', EVENTS_POLL_MS: '100', REDIS_KEY_PREFIX: `sse${randomBytes(3).toString('hex')}:` },
  });
}, 60_000);

afterAll(async () => {
  await cluster?.stopAll();
  await redis?.stopAll();
  await db?.drop();
});

/** Follows an account's events: the ids in arrival order, until stopped or the connection ends. */
function follow(url: string, key: string, accountId: string, lastEventId?: string) {
  const ids: string[] = [];
  const controller = new AbortController();
  const done = (async () => {
    const res = await request(`${url}/v1/accounts/${accountId}/events`, {
      headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream', ...(lastEventId ? { 'last-event-id': lastEventId } : {}) },
      signal: controller.signal,
    });
    expect(res.statusCode).toBe(200);
    let buffered = '';
    try {
      for await (const chunk of res.body) {
        buffered += chunk.toString();
        let end: number;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const frame = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const id = /^id: (.+)$/m.exec(frame)?.[1];
          if (id) ids.push(id);
        }
      }
    } catch {
      // The node died or the client stopped: what arrived is in `ids`.
    }
  })();
  return { ids, stop: () => controller.abort(), done };
}

/** A careful client: a 503 is retried with the same Idempotency-Key until it lands (bounded). */
async function landed(send: (key: string) => Promise<{ status: number; body: any }>): Promise<{ status: number; body: any }> {
  const k = randomUUID();
  const deadline = Date.now() + 20_000;
  for (;;) {
    const r = await send(k).catch(() => ({ status: 503, body: {} }));
    if (r.status !== 503 || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 200));
  }
}

const until = async (what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

describe('an account\'s event stream when the node serving it dies', () => {
  it('resumes on another node after Last-Event-ID with exactly the events it missed', async () => {
    const [first, second] = cluster.live('eu');
    const admin = api(first!.url, adminKey);
    const tenant = await admin.post('/v1/tenants', { name: 'sse' });
    const key = (await admin.post(`/v1/tenants/${tenant.body.id}/keys`)).body.key as string;
    const c = api(second!.url, key);
    const open = async (): Promise<string> => (await landed((k) => c.post('/v1/accounts', { currency: 'USD' }, k))).body.id as string;
    const [a, b] = [await open(), await open()];
    expect((await landed((k) => c.post('/v1/deposits', { accountId: a, amount: '100', currency: 'USD' }, k))).status).toBe(201);
    const pay = async (): Promise<void> => {
      const r = await landed((k) => api(cluster.live('eu')[0]!.url, key).post('/v1/transfers', { sourceAccountId: a, destinationAccountId: b, amount: '1', currency: 'USD' }, k));
      expect([201, 202], JSON.stringify(r.body)).toContain(r.status);
    };
    const all = async (): Promise<string[]> => {
      const page = await api(cluster.live('eu')[0]!.url, key).get(`/v1/accounts/${a}/events?limit=1000`);
      return (page.body.data as { id: string }[]).map((e) => e.id);
    };

    const before = follow(first!.url, key, a);
    for (let i = 0; i < 3; i++) await pay();
    const committedBefore = await all();
    await until('the stream caught up', () => before.ids.length >= committedBefore.length);
    expect(before.ids).toEqual(committedBefore);

    await first!.kill('SIGKILL');
    await before.done;
    for (let i = 0; i < 3; i++) await pay();

    const after = follow(second!.url, key, a, before.ids[before.ids.length - 1]);
    const everything = await all();
    expect(everything.length).toBeGreaterThan(committedBefore.length);
    await until('the resumed stream caught up', () => before.ids.length + after.ids.length >= everything.length);
    after.stop();
    await after.done;
    expect([...before.ids, ...after.ids]).toEqual(everything);
  }, 90_000);
});
