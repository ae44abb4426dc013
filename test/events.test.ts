// The ledger event stream against the real PostgreSQL: deposits, transfers, holds, refunds and
// withdrawals each leave their events, in each account's order; GET /v1/events pages through a
// tenant's events exactly once and shows no other tenant's; the SSE stream of an account
// resumes after Last-Event-ID with nothing repeated or missed, across a disconnect and across a
// restart of the node on the same database, and sends heartbeats while idle.
import { randomBytes } from 'node:crypto';
import { get } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config/settings.ts';
import { startNode } from '../src/node.ts';
import type { GeopayNode } from '../src/node.ts';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { idem } from './helpers/node.ts';
import { isPassed } from '../src/persistence/events.ts';
import type { FeedEvent, StoredEvent } from '../src/persistence/events.ts';

/** Short, so that a test sees heartbeats; nothing here waits for one to decide anything else. */
const HEARTBEAT_MS = 200;

let db: TestDatabase;
let node: GeopayNode;
let adminKey: string;

async function start(): Promise<void> {
  const cfg = loadConfig({}, {
    databaseUrl: db.url, port: 0, logLevel: 'silent', adminApiKey: adminKey, pgPoolMax: 6,
    rateLimitReadsPerS: 1_000_000, rateLimitWritesPerS: 1_000_000,
  });
  node = await startNode(cfg, { events: { heartbeatMs: HEARTBEAT_MS } });
}

beforeAll(async () => {
  db = await createTestDatabase('events');
  adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  await start();
});
afterAll(async () => {
  await node?.stop().catch(() => undefined);
  await db?.drop();
});

async function call(method: 'GET' | 'POST', url: string, opts: { key: string; body?: unknown; idem?: boolean; headers?: Record<string, string> }) {
  const headers: Record<string, string> = { authorization: `Bearer ${opts.key}`, ...opts.headers };
  if (opts.idem) headers['idempotency-key'] = idem();
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await node.app.inject({ method, url, headers, ...(opts.body === undefined ? {} : { payload: JSON.stringify(opts.body) }) });
  return { status: res.statusCode, body: res.json() as any };
}

async function ok(method: 'GET' | 'POST', url: string, key: string, body?: unknown): Promise<any> {
  const r = await call(method, url, { key, body, idem: method === 'POST' });
  if (r.status >= 300) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function tenant(name: string): Promise<string> {
  const t = await ok('POST', '/v1/tenants', adminKey, { name });
  return (await ok('POST', `/v1/tenants/${t.id}/keys`, adminKey)).key;
}

/** Each tenant key's accounts, as opened here. */
const accountsOf = new Map<string, string[]>();

async function account(key: string, region?: string): Promise<string> {
  const { id } = await ok('POST', '/v1/accounts', key, { currency: 'USD', ...(region ? { region } : {}) });
  accountsOf.set(key, [...(accountsOf.get(key) ?? []), id]);
  return id;
}
const money = (key: string, url: string, body: Record<string, unknown>) => ok('POST', url, key, { currency: 'USD', ...body });

/** Every event of an account, through its JSON pages of `limit`. */
async function accountEvents(key: string, id: string, limit = 3): Promise<any[]> {
  const out: any[] = [];
  let after: string | null = null;
  for (;;) {
    const page = await ok('GET', `/v1/accounts/${id}/events?limit=${limit}${after ? `&after=${after}` : ''}`, key);
    out.push(...page.data);
    if (!page.hasMore) return out;
    after = page.nextCursor;
  }
}

/**
 * Pages the tenant feed from `cursor` until it has given `count` events (the feed shows an event
 * once no older transaction is still running, so the last ones may need another ask).
 */
async function feed(key: string, count: number, cursor: string | null = null): Promise<{ events: any[]; cursor: string | null }> {
  const events: any[] = [];
  for (let asks = 0; asks < 500 && events.length < count; asks++) {
    const page = await ok('GET', `/v1/events?limit=4${cursor ? `&after=${cursor}` : ''}`, key);
    expect(page.unavailableRegions).toEqual([]);
    events.push(...page.data);
    cursor = page.nextCursor;
    if (!page.hasMore && events.length < count) await new Promise((r) => setTimeout(r, 20));
  }
  return { events, cursor };
}

/** The ids of an account's events are `<account>.1`, `.2`, ... without a gap, and their seqs never go back. */
function expectAccountOrder(id: string, events: any[], firstN = 1): void {
  expect(events.map((e) => e.id)).toEqual(events.map((_, i) => `${id}.${firstN + i}`));
  for (let i = 1; i < events.length; i++) expect(events[i].seq).toBeGreaterThanOrEqual(events[i - 1].seq);
  for (const e of events) expect(e.accountId).toBe(id);
}

const typesOf = (events: any[]): string[] => events.map((e) => (e.type === 'posting.created' ? `posting:${e.data.kind}` : e.type));

let A: string;
let a: string;
let b: string;
let transfer: any;
let partHold: any;

describe('the events of each change', () => {
  beforeAll(async () => {
    A = await tenant('events-a');
    [a, b] = [await account(A), await account(A)];
    await money(A, '/v1/deposits', { accountId: a, amount: '1000' });
    transfer = await money(A, '/v1/transfers', { sourceAccountId: a, destinationAccountId: b, amount: '300' });
    partHold = await money(A, '/v1/holds', { sourceAccountId: a, destinationAccountId: b, amount: '200' });
    await ok('POST', `/v1/holds/${partHold.id}/capture`, A, { amount: '50' });
    const voided = await money(A, '/v1/holds', { sourceAccountId: a, destinationAccountId: b, amount: '100' });
    await ok('POST', `/v1/holds/${voided.id}/void`, A);
    await ok('POST', `/v1/transfers/${transfer.id}/refunds`, A, { amount: '100' });
    await money(A, '/v1/withdrawals', { accountId: b, amount: '25' });
  });

  it('each account has its events in the order its actor committed them, numbered without a gap', async () => {
    const ofA = await accountEvents(A, a);
    const ofB = await accountEvents(A, b);
    expectAccountOrder(a, ofA);
    expectAccountOrder(b, ofB);
    // A credit settles its transfer in the commit that credits it: that state is the credited account's event.
    expect(typesOf(ofA)).toEqual([
      'posting:open',
      'posting:credit', 'transfer.settled', // the deposit
      'posting:debit', 'transfer.debited', // the transfer to b
      'posting:hold', 'hold.authorized',
      'posting:capture', 'hold.captured', 'transfer.debited', // 50 of 200 captured, the rest released
      'posting:hold', 'hold.authorized',
      'posting:release', 'hold.voided',
      'posting:credit', 'transfer.settled', // the refund from b
    ]);
    expect(typesOf(ofB)).toEqual([
      'posting:open',
      'posting:credit', 'transfer.settled', // the transfer from a
      'posting:credit', 'transfer.settled', // the capture
      'posting:debit', 'transfer.debited', // the refund
      'posting:debit', 'transfer.debited', // the withdrawal
    ]);
    expect(ofA.every((e) => e.tenantId !== null)).toBe(true);
  });

  it('shows each posting as the statement does, and each transfer and hold as it stood after the change', async () => {
    const ofA = await accountEvents(A, a, 100);
    const statement = (await ok('GET', `/v1/accounts/${a}/statement?limit=100`, A)).data.reverse();
    expect(ofA.filter((e) => e.type === 'posting.created').map((e) => e.data)).toEqual(statement.map((p: any) => ({ ...p, accountId: a, currency: 'USD' })));
    expect(ofA.filter((e) => e.type === 'posting.created').map((e) => e.seq)).toEqual(statement.map((p: any) => p.seq));

    const now = await ok('GET', `/v1/transfers/${transfer.id}`, A);
    const ofB = await accountEvents(A, b, 100);
    const settled = ofB.find((e) => e.type === 'transfer.settled' && e.data.id === transfer.id);
    // Settled then, refunded in part since: what the event showed is the row at its commit.
    expect(settled.data).toEqual({ ...now, refunded: '0' });
    const debited = ofA.find((e) => e.type === 'transfer.debited' && e.data.id === transfer.id);
    expect(debited.data).toEqual({ ...now, state: 'debited', refunded: '0', updatedAt: now.createdAt });

    const hold = await ok('GET', `/v1/holds/${partHold.id}`, A);
    expect(ofA.find((e) => e.type === 'hold.captured').data).toEqual(hold);
    expect(ofA.find((e) => e.type === 'hold.authorized' && e.data.id === partHold.id).data)
      .toEqual({ ...hold, state: 'held', captured: '0', remaining: '200', updatedAt: hold.createdAt });
  });

  it('GET /v1/events pages through every event of the tenant exactly once, each account in its order', async () => {
    const ofA = await accountEvents(A, a, 100);
    const ofB = await accountEvents(A, b, 100);
    const { events, cursor } = await feed(A, ofA.length + ofB.length);
    expect(events.map((e) => e.id).sort()).toEqual([...ofA, ...ofB].map((e) => e.id).sort());
    expect(events.filter((e) => e.accountId === a)).toEqual(ofA);
    expect(events.filter((e) => e.accountId === b)).toEqual(ofB);
    // Caught up: the cursor gives nothing more until something new commits, then exactly that.
    expect((await ok('GET', `/v1/events?after=${cursor}`, A)).data).toEqual([]);
    await money(A, '/v1/deposits', { accountId: b, amount: '7' });
    const more = await feed(A, 2, cursor);
    expect(typesOf(more.events)).toEqual(['posting:credit', 'transfer.settled']);
    expect(more.events.map((e) => e.id)).toEqual([`${b}.${ofB.length + 1}`, `${b}.${ofB.length + 2}`]);
  });

  it('across regions the destination posts the credit, and the source settles the transfer when the outcome comes back', async () => {
    const far = await account(A, 'far');
    const before = (await accountEvents(A, a, 1000)).length;
    const sent = await money(A, '/v1/transfers', { sourceAccountId: a, destinationAccountId: far, amount: '10' });
    expect(sent.state).toBe('settled');
    const ofSource = (await accountEvents(A, a, 1000)).slice(before);
    expect(typesOf(ofSource)).toEqual(['posting:debit', 'transfer.debited', 'transfer.settled']);
    // The settle posts nothing: it carries the debit's seq, and shows the row the source's region keeps.
    expect(ofSource[2].seq).toBe(ofSource[0].seq);
    expect(ofSource[2].data).toEqual(await ok('GET', `/v1/transfers/${sent.id}`, A));
    expect(typesOf(await accountEvents(A, far))).toEqual(['posting:open', 'posting:credit']);
  });

  it('another tenant sees none of them: its feed has its own accounts only, and the account is 404 to it', async () => {
    const B = await tenant('events-b');
    const own = await account(B);
    await money(B, '/v1/deposits', { accountId: own, amount: '5' });
    const { events } = await feed(B, 3);
    expect(new Set(events.map((e) => e.accountId))).toEqual(new Set([own]));
    const again = await ok('GET', '/v1/events?limit=1000', B);
    expect(again.data.every((e: any) => e.accountId === own)).toBe(true);
    for (const accept of ['application/json', 'text/event-stream']) {
      const r = await call('GET', `/v1/accounts/${a}/events`, { key: B, headers: { accept } });
      expect(r.status).toBe(404);
      expect(r.body.code).toBe('account_not_found');
    }
  });

  it('refuses a cursor it did not make, and an event id of another account', async () => {
    expect((await call('GET', '/v1/events?after=bm90LWEtY3Vyc29y', { key: A })).body.code).toBe('validation_failed');
    expect((await call('GET', `/v1/accounts/${a}/events?after=${b}.1`, { key: A })).status).toBe(400);
    expect((await call('GET', `/v1/accounts/${a}/events`, { key: A, headers: { 'last-event-id': 'nonsense' } })).status).toBe(400);
  });
});

describe('the outbox side, for a publisher', () => {
  it('gives each shard\'s events after the consumer\'s cursor in commit order; the cursor only moves forward', async () => {
    const P = await tenant('events-publisher');
    const acc = await account(P);
    await money(P, '/v1/deposits', { accountId: acc, amount: '9' });
    const { repos } = node.dbs.of(node.dbs.home);
    const shards = node.ownership.shards().map((s) => s.shard);
    const consumer = `test-${randomBytes(4).toString('hex')}`;
    const drain = async () => {
      const out: any[] = [];
      for (;;) {
        const got = await repos.events.unpublished(consumer, shards, 50);
        if (got.length === 0) return out;
        out.push(...got);
        // The last of each shard given: where this consumer has published up to.
        const marks = new Map(got.map((e) => [e.shard, { shard: e.shard, position: e.position }]));
        await repos.events.markPublished(consumer, [...marks.values()]);
      }
    };
    const ofAcc = await accountEvents(P, acc, 100);
    // A transaction still running anywhere on the server (another test's database included:
    // transaction ids are the server's) holds the horizon back until it ends: wait, bounded.
    let first: any[] = [];
    for (let i = 0; i < 200 && first.filter((e) => e.accountId === acc).length < ofAcc.length; i++) {
      first = [...first, ...(await drain())];
      if (first.filter((e) => e.accountId === acc).length < ofAcc.length) await new Promise((r) => setTimeout(r, 100));
    }
    expect(first.filter((e) => e.accountId === acc).map((e) => `${e.accountId}.${e.n}`)).toEqual(ofAcc.map((e) => e.id));
    // Every account's events come in its order, each once.
    const byAccount = new Map<string, number[]>();
    for (const e of first) byAccount.set(e.accountId, [...(byAccount.get(e.accountId) ?? []), e.n]);
    for (const ns of byAccount.values()) expect(ns).toEqual(ns.map((_, i) => i + 1));
    expect(await repos.events.unpublished(consumer, shards, 50)).toEqual([]);

    await money(P, '/v1/deposits', { accountId: acc, amount: '1' });
    let next: any[] = [];
    for (let asks = 0; asks < 200 && next.filter((e) => e.accountId === acc).length < 2; asks++) next = [...next, ...await drain()];
    expect(next.filter((e) => e.accountId === acc).map((e) => e.n)).toEqual([ofAcc.length + 1, ofAcc.length + 2]);
    // A late mark of an earlier position moves nothing back.
    const old = first.find((e) => e.shard === next[0].shard)!;
    await repos.events.markPublished(consumer, [{ shard: old.shard, position: old.position }]);
    expect(await repos.events.unpublished(consumer, shards, 50)).toEqual([]);
  });
});

describe('the outbox side, with an interest', () => {
  it('reads whole only the events of the tenants and types asked, and moves the cursor past the others unread', async () => {
    const [A, B] = [await tenant('interest-a'), await tenant('interest-b')];
    const [a, b] = [await account(A), await account(B)];
    await money(A, '/v1/deposits', { accountId: a, amount: '5' });
    await money(B, '/v1/deposits', { accountId: b, amount: '6' });
    const { repos, pool } = node.dbs.of(node.dbs.home);
    const { rows } = await pool.query<{ tenant_id: string }>('SELECT tenant_id FROM accounts WHERE id = $1', [a]);
    const interest = { tenants: [rows[0]!.tenant_id], types: ['posting.created'] };
    const shards = node.ownership.shards().map((s) => s.shard);
    const consumer = `test-${randomBytes(4).toString('hex')}`;
    const [ofA, ofB] = [await accountEvents(A, a, 100), await accountEvents(B, b, 100)];
    const seen: FeedEvent[] = [];
    const wantedOfA = ofA.filter((e) => e.type === 'posting.created').map((e) => e.id);
    const wholeOfA = () => seen.filter((e) => !isPassed(e) && e.accountId === a).length;
    // The horizon may hold events back a moment (see above): drain until A's are all in and nothing is left.
    for (let i = 0; i < 200; i++) {
      const got = await repos.events.unpublished(consumer, shards, 50, interest);
      seen.push(...got);
      const marks = new Map(got.map((e) => [e.shard, { shard: e.shard, position: e.position }]));
      await repos.events.markPublished(consumer, [...marks.values()]);
      if (got.length === 0 && wholeOfA() >= wantedOfA.length) break;
      if (got.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    const whole = seen.filter((e): e is StoredEvent => !isPassed(e));
    // A's postings, each whole with its payload; nothing of B's, nor A's events of other types.
    expect(whole.filter((e) => e.accountId === a).map((e) => `${e.accountId}.${e.n}`))
      .toEqual(wantedOfA);
    expect(whole.every((e) => e.tenantId === interest.tenants[0] && e.type === 'posting.created' && e.payload !== null)).toBe(true);
    expect(whole.some((e) => e.accountId === b)).toBe(false);
    // B's events were passed over, the cursor with them: nothing is left for this consumer.
    expect(seen.filter(isPassed).length).toBeGreaterThanOrEqual(ofB.length + ofA.length - wantedOfA.length);
    expect(await repos.events.unpublished(consumer, shards, 50)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Server-Sent Events, read over a real connection

interface Frame { id?: string; event?: string; data?: any; comment?: string }

interface Stream {
  status: number;
  contentType: string | null;
  /** The next frame, or undefined once the server ended the stream. */
  next(): Promise<Frame | undefined>;
  close(): void;
}

/** An EventSource's view of the stream, over node:http: closing it closes the connection, as a browser's does. */
async function openStream(key: string, id: string, lastEventId?: string): Promise<Stream> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}`, accept: 'text/event-stream' };
  if (lastEventId) headers['last-event-id'] = lastEventId;
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    get(`${node.url}/v1/accounts/${id}/events`, { headers }, resolve).on('error', reject);
  });
  res.setEncoding('utf8');
  const chunks = res[Symbol.asyncIterator]();
  let buffer = '';
  return {
    status: res.statusCode ?? 0,
    contentType: res.headers['content-type'] ?? null,
    async next() {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end >= 0) {
          const text = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          return parseFrame(text);
        }
        const chunk = await chunks.next().catch(() => ({ done: true as const, value: undefined }));
        if (chunk.done) return undefined;
        buffer += chunk.value as string;
      }
    },
    close: () => res.destroy(),
  };
}

function parseFrame(text: string): Frame {
  const frame: Frame = {};
  for (const line of text.split('\n')) {
    if (line.startsWith(':')) frame.comment = line.slice(1).trim();
    else if (line.startsWith('id: ')) frame.id = line.slice(4);
    else if (line.startsWith('event: ')) frame.event = line.slice(7);
    else if (line.startsWith('data: ')) frame.data = JSON.parse(line.slice(6));
  }
  return frame;
}

/** The next `count` events of the stream, heartbeats passed over. */
async function take(stream: Stream, count: number): Promise<Frame[]> {
  const out: Frame[] = [];
  while (out.length < count) {
    const f = await stream.next();
    if (!f) throw new Error(`the stream ended after ${out.length} of ${count} events`);
    if (f.id !== undefined) out.push(f);
  }
  return out;
}

/** Until the next heartbeat: the events before it (none, when caught up). */
async function untilHeartbeat(stream: Stream): Promise<Frame[]> {
  const out: Frame[] = [];
  for (;;) {
    const f = await stream.next();
    if (!f) throw new Error('the stream ended before a heartbeat');
    if (f.comment === 'heartbeat') return out;
    if (f.id !== undefined) out.push(f);
  }
}

const lastN = async (key: string, id: string): Promise<number> => (await accountEvents(key, id, 1000)).length;

describe('the SSE stream of an account', () => {
  let K: string;
  let acc: string;
  beforeAll(async () => {
    K = await tenant('events-sse');
    acc = await account(K);
    for (const amount of ['1', '2', '3']) await money(K, '/v1/deposits', { accountId: acc, amount });
  });

  it('streams the account\'s events in order, each as id, type and the event; heartbeats while idle; live events as they commit', async () => {
    const s = await openStream(K, acc);
    try {
      expect(s.status).toBe(200);
      expect(s.contentType).toMatch(/^text\/event-stream/);
      const all = await accountEvents(K, acc, 1000);
      const frames = await take(s, all.length);
      expect(frames.map((f) => f.id)).toEqual(all.map((e) => e.id));
      expect(frames.map((f) => f.event)).toEqual(all.map((e) => e.type));
      expect(frames.map((f) => f.data)).toEqual(all);
      // Caught up and idle: a heartbeat comes, with no event before it.
      expect(await untilHeartbeat(s)).toEqual([]);
      await money(K, '/v1/deposits', { accountId: acc, amount: '4' });
      const live = await take(s, 2);
      expect(live.map((f) => [f.id, f.event])).toEqual([[`${acc}.${all.length + 1}`, 'posting.created'], [`${acc}.${all.length + 2}`, 'transfer.settled']]);
    } finally {
      s.close();
    }
  });

  it('resumes after Last-Event-ID with exactly the rest, those committed while disconnected included', async () => {
    const first = await openStream(K, acc);
    const seen = await take(first, 3);
    first.close();
    // Committed while no one listens.
    await money(K, '/v1/deposits', { accountId: acc, amount: '5' });
    await money(K, '/v1/transfers', { sourceAccountId: acc, destinationAccountId: await account(K), amount: '1' });
    const total = await lastN(K, acc);

    const again = await openStream(K, acc, seen.at(-1)!.id);
    try {
      const rest = await take(again, total - 3);
      expect(rest.map((f) => f.id)).toEqual(Array.from({ length: total - 3 }, (_, i) => `${acc}.${i + 4}`));
      expect(await untilHeartbeat(again)).toEqual([]);
    } finally {
      again.close();
    }
    // ?after= is the same resume point, for a client that sets no header.
    const page = await ok('GET', `/v1/accounts/${acc}/events?after=${seen.at(-1)!.id}&limit=1000`, K);
    expect(page.data.map((e: any) => e.id)).toEqual(Array.from({ length: total - 3 }, (_, i) => `${acc}.${i + 4}`));
  });

  it('resumes exactly across a restart of the node on the same database, and so does the feed\'s cursor', async () => {
    const before = await lastN(K, acc);
    const s = await openStream(K, acc);
    const seen = await take(s, before);
    const { cursor, events: fed } = await feed(K, await tenantCount(K));

    const ended = (async () => { while (await s.next()); })();
    await node.stop();
    // The server closed its streams: the client sees the end, not a hang.
    await ended;
    await start();
    await money(K, '/v1/deposits', { accountId: acc, amount: '6' });
    const total = await lastN(K, acc);
    expect(total).toBe(before + 2);

    const resumed = await openStream(K, acc, seen.at(-1)!.id);
    try {
      const rest = await take(resumed, total - before);
      expect(rest.map((f) => f.id)).toEqual([`${acc}.${before + 1}`, `${acc}.${before + 2}`]);
      expect(await untilHeartbeat(resumed)).toEqual([]);
    } finally {
      resumed.close();
    }
    const after = await feed(K, 2, cursor);
    expect(after.events.map((e) => e.id)).toEqual([`${acc}.${before + 1}`, `${acc}.${before + 2}`]);
    expect(new Set([...fed, ...after.events].map((e) => e.id)).size).toBe(fed.length + after.events.length);
  });
});

/** How many events the tenant's accounts have, counted account by account. */
async function tenantCount(key: string): Promise<number> {
  let n = 0;
  for (const id of accountsOf.get(key) ?? []) n += await lastN(key, id);
  return n;
}
