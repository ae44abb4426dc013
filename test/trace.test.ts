// Logs that follow a payment, across real processes: two nodes in eu and one in us on one
// database. A transfer from an eu account to a us account, sent with a traceparent to the eu
// node that owns neither account, is forwarded to the source's owner and its credit leg to the
// destination's owner; every line any node logged about it must carry the client's trace id,
// and all three nodes must have logged it. Then: a 4xx leaves no line at warn or above, and a
// 503 from a real outage (the destination's owner killed) is logged with its code and cause.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { clusterMap, startCluster, startRedisMasters, waitFor, type ClusterNode, type LocalCluster, type RedisMasters } from './helpers/cluster.ts';
import { api, type Api } from './helpers/server-process.ts';

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
/** pino's numeric levels. */
const WARN = 40;
const ERROR = 50;

let db: TestDatabase | undefined;
let redis: RedisMasters | undefined;
let cluster: LocalCluster | undefined;
let sql: pg.Pool | undefined;
let tenantKey = '';
/** The source's owner, the destination's owner, and the eu node that owns neither (where clients call). */
let sourceOwner: ClusterNode;
let destinationOwner: ClusterNode;
let entry: ClusterNode;
let source = '';
let destination = '';
/** More us accounts, one per transfer of the concurrent case. */
let destinations: string[] = [];

interface LogLine {
  level: number;
  time: number;
  msg?: string;
  trace?: string;
  requestId?: string;
  listener?: string;
  code?: string;
  detail?: string;
  cause?: { code?: string; message?: string };
  req?: { url?: string };
  res?: { statusCode?: number };
  raw: string;
}

/** The node's JSON log lines (anything else it printed is skipped). */
function logsOf(node: ClusterNode): LogLine[] {
  const out: LogLine[] = [];
  for (const raw of node.logLines()) {
    if (!raw.startsWith('{')) continue;
    try {
      out.push({ ...(JSON.parse(raw) as Omit<LogLine, 'raw'>), raw });
    } catch {
      // A line cut by the kill of its process: not a log line to judge.
    }
  }
  return out;
}

const newTraceId = (): string => randomBytes(16).toString('hex');
const traceparent = (traceId: string): string => `00-${traceId}-${randomBytes(8).toString('hex')}-01`;
const client = (node: ClusterNode, key = tenantKey): Api => api(node.url, key);

async function mustPost(node: ClusterNode, path: string, body: unknown, key = tenantKey): Promise<any> {
  const r = await client(node, key).post(path, body);
  expect(r.status, `POST ${path}: ${JSON.stringify(r.body)}`).toBeLessThan(300);
  return r.body;
}

/** Waits until every shard is owned by a live node of its region and the map holds still for a second. */
async function settledOwners(): Promise<Map<string, string>> {
  let last = '';
  let since = Date.now();
  return waitFor('a settled cluster map', 30_000, async () => {
    const live = new Map(cluster!.live().map((n) => [n.nodeId, n.region]));
    const m = await clusterMap(cluster!.live()[0]!.url, adminKey);
    if (!m || !m.shards.every((s) => s.owner !== null && live.get(s.owner) === s.region)) return undefined;
    const shape = JSON.stringify(m.shards.map((s) => [s.id, s.owner]));
    if (shape !== last) {
      last = shape;
      since = Date.now();
      return undefined;
    }
    return Date.now() - since >= 1_000 ? new Map(m.shards.map((s) => [s.id, s.owner!])) : undefined;
  }, 200);
}

beforeAll(async () => {
  db = await createTestDatabase('trace');
  sql = new pg.Pool({ connectionString: db.url, max: 2 });
  redis = await startRedisMasters(1);
  cluster = await startCluster({
    databaseUrl: db.url,
    adminKey,
    regions: { eu: 2, us: 1 },
    redisUrls: redis.urls,
    keepLogLines: 20_000,
    env: {
      // Every request's lines, and the 4xx's debug line too: the test judges their levels.
      LOG_LEVEL: 'debug',
      SHARD_BUCKETS: '8',
      REGION_FAILOVER: 'deny',
      // The transfer under test settles at once; a relay re-delivery (a trace of its own, by
      // design) must not race it.
      RELAY_MIN_AGE_MS: '120000',
    },
  });
  const owners = await settledOwners();

  const tenant = await mustPost(cluster.nodes[0]!, '/v1/tenants', { name: 'trace' }, adminKey);
  tenantKey = (await mustPost(cluster.nodes[0]!, `/v1/tenants/${tenant.id}/keys`, undefined, adminKey)).key;
  source = (await mustPost(cluster.nodes[0]!, '/v1/accounts', { currency: 'USD', region: 'eu' })).id;
  destination = (await mustPost(cluster.nodes[0]!, '/v1/accounts', { currency: 'USD', region: 'us' })).id;
  destinations = await Promise.all(Array.from({ length: 4 }, async () => (await mustPost(cluster!.nodes[0]!, '/v1/accounts', { currency: 'USD', region: 'us' })).id as string));
  await mustPost(cluster.nodes[0]!, '/v1/deposits', { accountId: source, amount: '1000', currency: 'USD' });

  const { rows } = await sql.query<{ id: string; shard: string }>('SELECT id, shard FROM accounts WHERE id = ANY($1)', [[source, destination]]);
  const ownerOf = (account: string) => cluster!.node(owners.get(rows.find((r) => r.id === account)!.shard)!);
  sourceOwner = ownerOf(source);
  destinationOwner = ownerOf(destination);
  expect(sourceOwner.region).toBe('eu');
  expect(destinationOwner.region).toBe('us');
  entry = cluster.live('eu').find((n) => n !== sourceOwner)!;
}, 120_000);

afterAll(async () => {
  await cluster?.stopAll();
  await redis?.stopAll();
  await sql?.end();
  await db?.drop();
}, 60_000);

describe.sequential('logs that follow a payment', () => {
  it('every line about one transfer, on every node, carries the trace id the client sent', async () => {
    const traceId = newTraceId();
    const t0 = Date.now();
    const r = await client(entry).request('POST', '/v1/transfers',
      { sourceAccountId: source, destinationAccountId: destination, amount: '250', currency: 'USD' },
      { 'idempotency-key': randomBytes(8).toString('hex'), traceparent: traceparent(traceId) });
    expect([201, 202], JSON.stringify(r.body)).toContain(r.status);
    const transferId = r.body.id as string;
    // The answer joins the trace under the entry node's own span, and quotes the trace id.
    const answered = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(r.headers.traceparent));
    expect(answered?.[1], String(r.headers.traceparent)).toBe(traceId);
    expect(r.headers['x-request-id']).toBe(traceId);

    // Settled in the database (not through the API: a read would be a request of its own).
    await waitFor('the transfer to settle', 15_000, async () => {
      const { rows } = await sql!.query<{ state: string }>('SELECT state FROM transfers WHERE id = $1', [transferId]);
      return rows[0]?.state === 'settled' ? true : undefined;
    });
    // The credit leg's lines are the last to be written.
    await waitFor('the destination owner\'s lines', 5_000, () => (logsOf(destinationOwner).some((l) => l.trace === traceId) ? true : undefined));

    // About it: a line naming the transfer or the trace, or a request line for one of its accounts.
    const about = (node: ClusterNode) => logsOf(node).filter((l) => l.time >= t0
      && (l.raw.includes(transferId) || l.raw.includes(traceId) || [source, destination].some((a) => l.req?.url?.includes(a))));
    const byNode = new Map([entry, sourceOwner, destinationOwner].map((n) => [n.nodeId, about(n)]));
    for (const [nodeId, lines] of byNode) {
      const other = lines.filter((l) => l.trace !== traceId).map((l) => l.raw);
      expect(other, `${nodeId}: lines about the transfer under another trace`).toEqual([]);
      expect(lines.length, `${nodeId} logged the transfer`).toBeGreaterThan(0);
    }
    // Each hop is the node it should be: the client's request, the forwarded debit, the credit leg.
    const urls = (n: ClusterNode) => byNode.get(n.nodeId)!.map((l) => `${l.listener ?? 'public'} ${l.req?.url ?? ''}`);
    expect(urls(entry)).toContain('public /v1/transfers');
    expect(urls(sourceOwner)).toContain(`internal /internal/v1/accounts/${source}/commands`);
    expect(urls(destinationOwner)).toContain(`internal /internal/v1/accounts/${destination}/commands`);
  });

  it('concurrent transfers from one account each send their credit leg under their own trace', async () => {
    const sent = destinations.map((dst) => ({ dst, traceId: newTraceId() }));
    const t0 = Date.now();
    // At once, to one source actor: debits that meet in its mailbox are committed in one batch,
    // and their legs start from that one commit, in one request's context (the saga must not
    // take the trace from there; this case fails when it does).
    const answers = await Promise.all(sent.map(({ dst, traceId }) => client(entry).request('POST', '/v1/transfers',
      { sourceAccountId: source, destinationAccountId: dst, amount: '1', currency: 'USD' },
      { 'idempotency-key': randomBytes(8).toString('hex'), traceparent: traceparent(traceId) })));
    for (const a of answers) expect([201, 202], JSON.stringify(a.body)).toContain(a.status);
    const ids = answers.map((a) => a.body.id as string);
    await waitFor('the transfers to settle', 15_000, async () => {
      const { rows } = await sql!.query<{ n: number }>(`SELECT count(*)::int AS n FROM transfers WHERE id = ANY($1) AND state = 'settled'`, [ids]);
      return rows[0]!.n === ids.length ? true : undefined;
    });
    for (const { dst, traceId } of sent) {
      const legs = await waitFor(`the credit leg to ${dst}`, 5_000, () => {
        // (The account's opening was forwarded here too, before t0, under its own trace.)
        const ls = logsOf(destinationOwner).filter((l) => l.time >= t0 && l.req?.url === `/internal/v1/accounts/${dst}/commands`);
        return ls.length > 0 ? ls : undefined;
      });
      expect(legs.map((l) => l.trace), `the credit leg to ${dst}: ${legs.map((l) => l.raw).join('\n')}`).toEqual(legs.map(() => traceId));
    }
  });

  it('keeps a client\'s x-request-id on its lines and answer, and follows a forwarded read', async () => {
    const requestId = `client-${randomBytes(4).toString('hex')}`;
    const r = await client(entry).request('GET', `/v1/accounts/${source}`, undefined, { 'x-request-id': requestId });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.headers['x-request-id']).toBe(requestId);
    const traceId = /^00-([0-9a-f]{32})-[0-9a-f]{16}-01$/.exec(String(r.headers.traceparent))?.[1];
    expect(traceId, 'a new trace, in the answer').toBeDefined();
    await waitFor('the owner\'s lines for the read', 5_000, () => (logsOf(sourceOwner).some((l) => l.trace === traceId) ? true : undefined));
    const here = logsOf(entry).filter((l) => l.trace === traceId);
    expect(here.length).toBeGreaterThan(0);
    expect(here.filter((l) => l.requestId !== requestId).map((l) => l.raw)).toEqual([]);
    expect(logsOf(sourceOwner).filter((l) => l.trace === traceId).map((l) => l.req?.url)).toContain(`/internal/v1/accounts/${source}/state`);
  });

  it('a 4xx is logged below warn, with its status', async () => {
    const traceId = newTraceId();
    const r = await client(entry).request('POST', '/v1/transfers',
      { sourceAccountId: source, destinationAccountId: destination, amount: 'ten', currency: 'USD' },
      { 'idempotency-key': randomBytes(8).toString('hex'), traceparent: traceparent(traceId) });
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('invalid_amount');
    const lines = await waitFor('the refused request\'s lines', 5_000, () => {
      const ls = logsOf(entry).filter((l) => l.trace === traceId);
      return ls.some((l) => l.res?.statusCode === 400) ? ls : undefined;
    });
    expect(lines.filter((l) => l.level >= WARN).map((l) => l.raw)).toEqual([]);
    expect(lines.find((l) => l.msg === 'request refused')).toMatchObject({ code: 'invalid_amount' });
  });

  it('a 503 from an unreachable owner is logged once, at warn, with its code and cause', async () => {
    await destinationOwner.kill('SIGKILL');
    // Its lease outlives it (LEASE_TTL_MS): the entry node still routes to it and cannot connect.
    const traceId = newTraceId();
    const r = await client(entry).request('GET', `/v1/accounts/${destination}`, undefined, { traceparent: traceparent(traceId) });
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.code).toBe('shard_unavailable');
    const lines = await waitFor('the 503\'s lines', 5_000, () => {
      const ls = logsOf(entry).filter((l) => l.trace === traceId);
      return ls.some((l) => l.res?.statusCode === 503) ? ls : undefined;
    });
    const answered = lines.filter((l) => l.msg === 'request answered unavailable');
    expect(answered.map((l) => l.raw), 'one line for the answer').toHaveLength(1);
    const line = answered[0]!;
    expect(line.level).toBe(WARN);
    expect(line.code).toBe('shard_unavailable');
    expect(line.detail).toBe('the owner of this account is unreachable');
    expect(line.cause?.code).toBe('ECONNREFUSED');
    expect(lines.filter((l) => l.level >= ERROR).map((l) => l.raw)).toEqual([]);
  });
});
