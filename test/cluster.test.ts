// The cluster under failure, end to end with real processes: 3 regions x 2 nodes, 3 Redis
// masters for the Redlock leases, one PostgreSQL database. Each scenario breaks something
// (kill -9 an owner, SIGSTOP one past its lease, lose Redis masters, join a node, stop a whole
// region) while clients keep moving money, then proves from the journal that every
// acknowledged transfer happened exactly once, no stale owner wrote, and the ledger balances.
// The scenarios share one cluster and run in order; each leaves it whole for the next.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Agent } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  clusterMap,
  startCluster,
  startRedisMasters,
  waitFor,
  type ClusterMap,
  type ClusterNode,
  type LocalCluster,
  type RedisMasters,
} from './helpers/cluster.ts';
import { api, type Api } from './helpers/server-process.ts';

const leaseTtlMs = 2_000;
/** Fewer buckets than the default 64 keep the maps short and put several accounts in a shard; the lease logic is the same. */
const buckets = 16;
const regionSizes = { eu: 2, us: 2, ap: 2 };
const accountsPerRegion = 40;
const fundingMinor = 1_000_000n;
/** One attempt of a client; a paused node holds a request this long before the client gives up on it. */
const attemptTimeoutMs = 5_000;
/** How long a retrying client keeps retrying one transfer with its key. */
const retryDeadlineMs = 30_000;
const settleDeadlineMs = 20_000;

// int8 as bigint for this pool only: sums of money never go through a float.
const int8AsBigInt = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? (v: string) => BigInt(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
let db: TestDatabase | undefined;
let redis: RedisMasters | undefined;
let cluster: LocalCluster | undefined;
let sql: pg.Pool | undefined;
let agent: Agent | undefined;
let tenantKey = '';
/** Customer accounts by region, and the shard of each (from the accounts table). */
const accountsByRegion = new Map<string, string[]>();
const shardOfAccount = new Map<string, string>();
let allAccounts: string[] = [];
/** Every transfer any scenario sent, for the idempotency checks at the end of each scenario. */
const allOps: Op[] = [];

// ---------------------------------------------------------------------------------------------
// Clients

type Outcome = number | `err:${string}`;
interface Attempt {
  node: string;
  t0: number;
  t1: number;
  status: Outcome;
  code: string | undefined;
  retryAfter: string | undefined;
  transferId: string | undefined;
}
interface Op {
  key: string;
  source: string;
  destination: string;
  amount: bigint;
  attempts: Attempt[];
  final: Outcome | undefined;
  transferId: string | undefined;
}

const isAck = (s: Outcome | undefined): boolean => s === 201 || s === 202;
/** Worth another try with the same key: the server said "later", or no answer came at all. */
const isRetryable = (a: Attempt): boolean => a.status === 503 || (a.status === 409 && a.code === 'idempotency_key_in_progress') || typeof a.status === 'string';

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const c = (): LocalCluster => cluster!;
/** Nodes a client may talk to: alive and not frozen (a frozen one only makes clients wait). */
const reachable = (): ClusterNode[] => c().live().filter((n) => !n.paused);
const tenantApi = (node: ClusterNode, dispatcher: Agent = agent!): Api => api(node.url, tenantKey, { dispatcher });

function newOp(source: string, destination: string): Op {
  const op: Op = {
    key: randomUUID(),
    source,
    destination,
    amount: BigInt(1 + Math.floor(Math.random() * 100)),
    attempts: [],
    final: undefined,
    transferId: undefined,
  };
  allOps.push(op);
  return op;
}

async function attempt(op: Op, node: ClusterNode, dispatcher: Agent = agent!): Promise<Attempt> {
  const t0 = Date.now();
  let a: Attempt;
  try {
    const res = await tenantApi(node, dispatcher).post(
      '/v1/transfers',
      // The key in the metadata lets the checks count the transfers each key created.
      { sourceAccountId: op.source, destinationAccountId: op.destination, amount: String(op.amount), currency: 'USD', metadata: { k: op.key } },
      op.key,
    );
    const body = (typeof res.body === 'object' && res.body !== null ? res.body : {}) as { id?: string; code?: string };
    const ra = res.headers['retry-after'];
    a = {
      node: node.nodeId, t0, t1: Date.now(), status: res.status, code: body.code,
      retryAfter: Array.isArray(ra) ? ra[0] : ra, transferId: isAck(res.status) ? body.id : undefined,
    };
  } catch (err) {
    const e = err as { code?: string; name?: string };
    a = { node: node.nodeId, t0, t1: Date.now(), status: `err:${e.code ?? e.name ?? 'unknown'}`, code: undefined, retryAfter: undefined, transferId: undefined };
  }
  op.attempts.push(a);
  op.final = a.status;
  if (a.transferId) op.transferId = a.transferId;
  return a;
}

/** Sends until acknowledged (same key, another node each time) or the deadline; without retry, once. */
async function runOp(op: Op, opts: { retry: boolean; targets?: () => ClusterNode[]; deadlineMs?: number }): Promise<void> {
  const targets = opts.targets ?? reachable;
  const deadline = Date.now() + (opts.deadlineMs ?? retryDeadlineMs);
  for (;;) {
    const nodes = targets();
    if (nodes.length === 0) {
      // Every node down or frozen for a moment (a scenario's doing): wait like a client would.
      op.final = 'err:no-node';
      if (!opts.retry || Date.now() > deadline) return;
      await sleep(100);
      continue;
    }
    const a = await attempt(op, pick(nodes));
    if (isAck(a.status) || !opts.retry || !isRetryable(a) || Date.now() > deadline) return;
    // Retry-After says a second; a test honours the idea, not the figure.
    await sleep(100 + Math.random() * 100);
  }
}

interface Stream {
  ops: Op[];
  stop(): Promise<Op[]>;
}
/** Streams still running: a failed scenario's are stopped before the next one starts. */
const activeStreams = new Set<Stream>();

/** `workers` closed-loop clients sending transfers from `pair()` until stopped. */
function startStream(opts: { workers: number; pair: () => [string, string]; retry: boolean; targets?: () => ClusterNode[] }): Stream {
  const ops: Op[] = [];
  let stopped = false;
  const worker = async (): Promise<void> => {
    while (!stopped) {
      const [s, d] = opts.pair();
      const op = newOp(s, d);
      ops.push(op);
      await runOp(op, opts);
    }
  };
  const running = Array.from({ length: opts.workers }, worker);
  const stream: Stream = {
    ops,
    async stop() {
      stopped = true;
      await Promise.all(running);
      activeStreams.delete(stream);
      return ops;
    },
  };
  activeStreams.add(stream);
  return stream;
}

const randomPair = (from: readonly string[] = allAccounts, to: readonly string[] = allAccounts) => (): [string, string] => {
  const s = pick(from);
  let d = pick(to);
  while (d === s) d = pick(to);
  return [s, d];
};

function summarize(ops: Op[]): string {
  const attempts = new Map<string, number>();
  for (const op of ops) for (const a of op.attempts) attempts.set(String(a.status), (attempts.get(String(a.status)) ?? 0) + 1);
  const acked = ops.filter((o) => isAck(o.final)).length;
  return `${ops.length} transfers, ${acked} acknowledged; attempts by status: ${[...attempts].map(([s, n]) => `${s}:${n}`).join(' ')}`;
}

/** A setup POST that must succeed: retried on any node with the same key. */
async function mustPost(path: string, body: unknown, key: string = tenantKey, nodes: () => ClusterNode[] = reachable): Promise<any> {
  const idem = randomUUID();
  const deadline = Date.now() + retryDeadlineMs;
  for (;;) {
    const res = await api(pick(nodes()).url, key, { dispatcher: agent! }).post(path, body, idem).catch((err: unknown) => ({ status: 0, body: String(err), headers: {} }));
    if (res.status === 201 || res.status === 202) return res.body;
    if ((res.status !== 503 && res.status !== 409 && res.status !== 0) || Date.now() > deadline) {
      throw new Error(`POST ${path} answered ${res.status}: ${JSON.stringify(res.body)}`);
    }
    await sleep(100);
  }
}

async function mustGet(path: string, key: string = tenantKey): Promise<any> {
  const deadline = Date.now() + retryDeadlineMs;
  for (;;) {
    const res = await api(pick(reachable()).url, key, { dispatcher: agent! }).get(path).catch((err: unknown) => ({ status: 0, body: String(err), headers: {} }));
    if (res.status === 200) return res.body;
    if ((res.status !== 503 && res.status !== 0) || Date.now() > deadline) throw new Error(`GET ${path} answered ${res.status}: ${JSON.stringify(res.body)}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// The cluster map and the shards table

async function query<R extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<R[]> {
  return (await sql!.query<R>(text, params)).rows;
}

async function map(): Promise<ClusterMap> {
  return waitFor('GET /v1/cluster to answer 200', 10_000, async () => {
    for (const n of reachable()) {
      const m = await clusterMap(n.url, adminKey);
      if (m) return m;
    }
    return undefined;
  });
}

async function shardEpochs(): Promise<Map<string, { epoch: bigint; owner: string | null }>> {
  const rows = await query<{ id: string; epoch: bigint; owner: string | null }>('SELECT id, epoch, owner FROM shards');
  return new Map(rows.map((r) => [r.id, { epoch: r.epoch, owner: r.owner }]));
}

/**
 * Waits until every shard of the regions with live nodes is owned by a live node of its region
 * and the map stays the same for a second: the cluster is at rest between scenarios.
 */
async function settledMap(timeoutMs = 20_000): Promise<ClusterMap> {
  let last = '';
  let since = 0;
  return waitFor('a settled cluster map (every shard owned by a live node of its region)', timeoutMs, async () => {
    const m = await map();
    const live = new Map(reachable().map((n) => [n.nodeId, n.region]));
    const liveRegions = new Set(live.values());
    const ok = m.shards.filter((s) => liveRegions.has(s.region)).every((s) => s.owner !== null && live.get(s.owner) === s.region);
    const shape = JSON.stringify(m.shards.map((s) => [s.id, s.owner]).sort());
    if (!ok) {
      last = '';
      return undefined;
    }
    if (shape !== last) {
      last = shape;
      since = Date.now();
      return undefined;
    }
    return Date.now() - since >= 1_000 ? m : undefined;
  }, 200);
}

const ownedBy = (m: ClusterMap, nodeId: string): string[] => m.shards.filter((s) => s.owner === nodeId).map((s) => s.id);

// ---------------------------------------------------------------------------------------------
// Checks

async function waitForNothingInFlight(): Promise<number> {
  const deadline = Date.now() + settleDeadlineMs;
  for (;;) {
    const [row] = await query<{ n: bigint }>(`SELECT count(*) AS n FROM transfers WHERE state IN ('debited', 'refused')`);
    if (row!.n === 0n || Date.now() > deadline) return Number(row!.n);
    await sleep(200);
  }
}

/** Every acknowledged transfer: one debit of -amount on its source, one credit of +amount on its destination, one key. */
async function expectAckedExactlyOnce(ops: Op[]): Promise<void> {
  const acked = ops.filter((o) => isAck(o.final));
  // Every acknowledgement of one key named the same transfer.
  const keyConflicts = acked.filter((o) => new Set(o.attempts.filter((a) => a.transferId).map((a) => a.transferId)).size !== 1);
  expect(keyConflicts.map((o) => `${o.key}: ${o.attempts.map((a) => a.transferId).join(',')}`), 'keys answered with two transfers').toEqual([]);
  const ids = acked.map((o) => o.transferId!);
  const transfers = new Map(
    (await query<{ id: string; state: string; source_id: string; destination_id: string; amount: bigint; k: string | null }>(
      `SELECT id, state, source_id, destination_id, amount, metadata->>'k' AS k FROM transfers WHERE id = ANY($1)`, [ids],
    )).map((r) => [r.id, r]),
  );
  const postings = await query<{ transfer_id: string; account_id: string; amount: bigint }>(
    'SELECT transfer_id, account_id, amount FROM journal WHERE transfer_id = ANY($1)', [ids],
  );
  const byTransfer = new Map<string, { account_id: string; amount: bigint }[]>();
  for (const p of postings) byTransfer.set(p.transfer_id, [...(byTransfer.get(p.transfer_id) ?? []), p]);
  const wrong: string[] = [];
  for (const op of acked) {
    const t = transfers.get(op.transferId!);
    const ps = byTransfer.get(op.transferId!) ?? [];
    const debits = ps.filter((p) => p.amount < 0n);
    const credits = ps.filter((p) => p.amount > 0n);
    const ok =
      t !== undefined && t.state === 'settled' && t.k === op.key && t.source_id === op.source && t.destination_id === op.destination && t.amount === op.amount &&
      debits.length === 1 && debits[0]!.account_id === op.source && debits[0]!.amount === -op.amount &&
      credits.length === 1 && credits[0]!.account_id === op.destination && credits[0]!.amount === op.amount;
    if (!ok) wrong.push(`${op.transferId} key=${op.key} state=${t?.state} postings=${ps.map((p) => `${p.account_id}:${p.amount}`).join(',')}`);
  }
  expect(wrong.slice(0, 20), `acknowledged transfers not applied exactly once (${wrong.length} of ${acked.length})`).toEqual([]);
}

/** The invariants every scenario must leave intact, from the database and the API. */
async function expectInvariants(label: string): Promise<void> {
  const inFlight = await waitForNothingInFlight();
  expect(inFlight, `${label}: transfers still in flight after ${settleDeadlineMs} ms`).toBe(0);

  // Ledger: postings plus money in flight sum to zero per currency.
  const ledger = await query<{ currency: string; total: string }>(
    `SELECT a.currency, (coalesce(sum(j.amount), 0) + coalesce((SELECT sum(t.amount) FROM transfers t
              WHERE t.currency = a.currency AND t.state IN ('debited', 'refused')), 0))::text AS total
       FROM journal j JOIN accounts a ON a.id = j.account_id GROUP BY a.currency`,
  );
  for (const l of ledger) expect(l.total, `${label}: ledger of ${l.currency}`).toBe('0');

  // Each transfer: one debit; a credit (or return) exactly once when terminal, none in flight.
  const legs = await query<{ id: string; state: string; neg: bigint; pos: bigint }>(
    `SELECT t.id, t.state, count(j.*) FILTER (WHERE j.amount < 0) AS neg, count(j.*) FILTER (WHERE j.amount > 0) AS pos
       FROM transfers t LEFT JOIN journal j ON j.transfer_id = t.id GROUP BY t.id, t.state
     HAVING count(j.*) FILTER (WHERE j.amount < 0) <> 1
         OR count(j.*) FILTER (WHERE j.amount > 0) <> (CASE WHEN t.state IN ('settled', 'returned') THEN 1 ELSE 0 END)
      LIMIT 20`,
  );
  expect(legs, `${label}: transfers with a missing or repeated leg`).toEqual([]);

  // No idempotency key applied twice: one transfer per client key, one key row per transfer.
  const twice = await query<{ k: string; n: bigint }>(
    `SELECT metadata->>'k' AS k, count(*) AS n FROM transfers WHERE metadata ? 'k' GROUP BY 1 HAVING count(*) > 1 LIMIT 20`,
  );
  expect(twice, `${label}: client keys that created more than one transfer`).toEqual([]);
  const keyless = await query<{ id: string }>(
    `SELECT t.id FROM transfers t WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.resource_id = t.id) LIMIT 20`,
  );
  expect(keyless, `${label}: transfers without their idempotency key`).toEqual([]);
  const sharedKey = await query<{ resource_id: string }>(
    `SELECT resource_id FROM idempotency_keys WHERE resource_id LIKE 'tr_%' GROUP BY 1 HAVING count(*) > 1 LIMIT 20`,
  );
  expect(sharedKey, `${label}: transfers claimed by two keys`).toEqual([]);

  // Replay: seq 1..n with no gap, the running sum is balance_after, epochs never go backwards
  // and never pass the shard's current epoch.
  const broken = await query<{ account_id: string; seq: bigint; why: string }>(
    `SELECT account_id, seq, why FROM (
       SELECT j.account_id, j.seq,
              CASE WHEN j.seq <> coalesce(lag(j.seq) OVER w, 0) + 1 THEN 'seq gap'
                   WHEN j.balance_after <> sum(j.amount) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) THEN 'running sum differs from balance_after'
                   WHEN j.epoch < lag(j.epoch) OVER w THEN 'epoch went backwards'
                   WHEN j.epoch > s.epoch THEN 'epoch above the shard''s'
              END AS why
         FROM journal j JOIN accounts a ON a.id = j.account_id JOIN shards s ON s.id = a.shard
       WINDOW w AS (PARTITION BY j.account_id ORDER BY j.seq)) x
      WHERE why IS NOT NULL LIMIT 20`,
  );
  expect(broken, `${label}: journal rows that do not replay`).toEqual([]);

  // One writer per shard and epoch: every posting at a shard's epoch names the same node.
  const twoWriters = await query<{ shard: string; epoch: bigint; nodes: string }>(
    `SELECT a.shard, j.epoch, string_agg(DISTINCT j.node_id, ',') AS nodes FROM journal j JOIN accounts a ON a.id = j.account_id
      GROUP BY a.shard, j.epoch HAVING count(DISTINCT j.node_id) > 1 LIMIT 20`,
  );
  expect(twoWriters, `${label}: shard epochs written by more than one node`).toEqual([]);

  // The replayed balances are what the owners report, and the customers hold what was deposited.
  const sums = new Map(
    (await query<{ account_id: string; balance: bigint }>(
      `SELECT DISTINCT ON (account_id) account_id, balance_after AS balance FROM journal WHERE account_id = ANY($1) ORDER BY account_id, seq DESC`,
      [allAccounts],
    )).map((r) => [r.account_id, r.balance]),
  );
  let customers = 0n;
  const differ: string[] = [];
  for (let i = 0; i < allAccounts.length; i += 16) {
    await Promise.all(allAccounts.slice(i, i + 16).map(async (id) => {
      const acc = await mustGet(`/v1/accounts/${id}`);
      const balance = BigInt(acc.balance as string);
      customers += balance;
      if (balance !== sums.get(id)) differ.push(`${id}: API ${balance}, journal ${sums.get(id)}`);
    }));
  }
  expect(differ, `${label}: balances that differ from the journal replay`).toEqual([]);
  expect(customers, `${label}: customer balances`).toBe(fundingMinor * BigInt(allAccounts.length));

  // Client side: every key this run sent created at most one transfer, and acknowledged ones exist.
  await expectAckedExactlyOnce(allOps);
}

// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  db = await createTestDatabase('cluster');
  sql = new pg.Pool({ connectionString: db.url, max: 4, types: int8AsBigInt });
  agent = new Agent({ connections: 64, headersTimeout: attemptTimeoutMs, bodyTimeout: attemptTimeoutMs, connect: { timeout: 2_000 } });
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: db.url,
    adminKey,
    regions: regionSizes,
    redisUrls: redis.urls,
    env: {
      LEASE_TTL_MS: String(leaseTtlMs),
      // A region with no node stays unowned (the cross-region scenario depends on it).
      REGION_FAILOVER: 'deny',
      REGION_FAILOVER_GRACE_MS: '2000',
      SHARD_BUCKETS: String(buckets),
      RELAY_INTERVAL_MS: '200',
      RELAY_MIN_AGE_MS: '500',
      LOG_LEVEL: 'warn',
    },
  });
  await settledMap(30_000);

  const tenant = await mustPost('/v1/tenants', { name: 'cluster' }, adminKey);
  tenantKey = (await mustPost(`/v1/tenants/${tenant.id}/keys`, undefined, adminKey)).key;
  for (const region of Object.keys(regionSizes)) {
    const opened = await Promise.all(Array.from({ length: accountsPerRegion }, () => mustPost('/v1/accounts', { currency: 'USD', region })));
    const ids = opened.map((a) => a.id as string);
    for (const id of ids) expect(id.startsWith(`acc_${region}_`), `account id ${id} carries its region`).toBe(true);
    accountsByRegion.set(region, ids);
  }
  allAccounts = [...accountsByRegion.values()].flat();
  for (let i = 0; i < allAccounts.length; i += 20) {
    await Promise.all(allAccounts.slice(i, i + 20).map((accountId) => mustPost('/v1/deposits', { accountId, amount: String(fundingMinor), currency: 'USD' })));
  }
  for (const r of await query<{ id: string; shard: string }>('SELECT id, shard FROM accounts WHERE id = ANY($1)', [allAccounts])) {
    shardOfAccount.set(r.id, r.shard);
  }
  await expectInvariants('setup');
}, 120_000);

// A failed scenario must not leave the next one a broken cluster: traffic stopped, frozen nodes
// woken, Redis masters back. (A dead node stays dead; the next scenario works with the live ones.)
afterEach(async () => {
  await Promise.all([...activeStreams].map((s) => s.stop()));
  for (const n of cluster?.live() ?? []) if (n.paused) n.sigcont();
  for (let i = 0; i < (redis?.urls.length ?? 0); i++) if (redis!.pid(i) === undefined) await redis!.restart(i);
}, 60_000);

afterAll(async () => {
  await cluster?.stopAll();
  await redis?.stopAll();
  await agent?.destroy();
  await sql?.end();
  await db?.drop();
}, 60_000);

describe.sequential('cluster', () => {
  it('kill -9 of an owner: its shards are owned again within TTL + 2 s, nothing acknowledged is lost or doubled', async () => {
    const before = await settledMap();
    const victim = c().node('eu-1');
    const shards = ownedBy(before, victim.nodeId);
    expect(shards.length, `${victim.nodeId} owns shards before the kill`).toBeGreaterThan(0);
    const epochs0 = await shardEpochs();

    const stream = startStream({ workers: 16, pair: randomPair(), retry: true });
    await sleep(1_500);
    const killedAt = Date.now();
    await victim.kill('SIGKILL');

    // Owned again = a live node holds the lease (map) and has bumped the epoch (table).
    const takenAt = await waitFor(`the shards of ${victim.nodeId} to be owned again`, leaseTtlMs + 8_000, async () => {
      const m = await map();
      const epochs = await shardEpochs();
      const done = shards.every((id) => {
        const s = m.shards.find((x) => x.id === id);
        return s?.owner && s.owner !== victim.nodeId && epochs.get(id)!.epoch > epochs0.get(id)!.epoch;
      });
      return done ? Date.now() : undefined;
    }, 50);
    const takeoverMs = takenAt - killedAt;
    await sleep(1_500);
    const ops = await stream.stop();
    console.info(`kill: ${shards.length} shards of ${victim.nodeId} owned again after ${takeoverMs} ms; ${summarize(ops)}`);

    expect(takeoverMs, 'takeover after kill -9 (ms)').toBeLessThanOrEqual(leaseTtlMs + 2_000);
    // The actor inspection agrees with the map and the shards table on the new owner.
    const moved = allAccounts.find((id) => shards.includes(shardOfAccount.get(id)!));
    if (moved) {
      const shard = shardOfAccount.get(moved)!;
      const row = (await shardEpochs()).get(shard)!;
      const insp = await mustGet(`/v1/actors/accounts/${moved}`, adminKey);
      expect({ node: insp.owner?.node, shard: insp.owner?.shard, epoch: String(insp.owner?.epoch) }, `owner of ${moved} in the actor inspection`)
        .toEqual({ node: row.owner, shard, epoch: String(row.epoch) });
    }
    expect(ops.filter((o) => isAck(o.final)).length).toBeGreaterThan(0);
    expect(ops.filter((o) => !isAck(o.final)).map((o) => `${o.key}: ${o.attempts.map((a) => a.status).join(',')}`), 'transfers never acknowledged').toEqual([]);
    await expectAckedExactlyOnce(ops);
    await expectInvariants('kill');
  }, 60_000);

  it('SIGSTOP of an owner past its lease: another node takes the shard, the old owner cannot write after it wakes', async () => {
    const before = await settledMap();
    // The us shard with the most of our accounts, and its owner.
    const count = new Map<string, number>();
    for (const id of accountsByRegion.get('us')!) count.set(shardOfAccount.get(id)!, (count.get(shardOfAccount.get(id)!) ?? 0) + 1);
    const shard = [...count].sort((a, b) => b[1] - a[1])[0]![0];
    const ownerId = before.shards.find((s) => s.id === shard)!.owner!;
    const owner = c().node(ownerId);
    const inShard = allAccounts.filter((id) => shardOfAccount.get(id) === shard);
    const e0 = (await shardEpochs()).get(shard)!.epoch;

    // Half the transfers debit an account of the shard, so it is written all the time.
    const others = allAccounts.filter((id) => !inShard.includes(id));
    const toShard = randomPair(inShard, others);
    const anywhere = randomPair();
    const stream = startStream({ workers: 12, pair: () => (Math.random() < 0.5 ? toShard() : anywhere()), retry: true });
    await sleep(1_000);

    // Writes on the owner itself right before it freezes: whatever of them was not yet sent to
    // PostgreSQL must be refused when it wakes. Their client waits through the pause.
    const patient = new Agent({ connections: 16, headersTimeout: 30_000, bodyTimeout: 30_000 });
    const pendingOps = Array.from({ length: 12 }, () => newOp(pick(inShard), pick(others)));
    const pending = pendingOps.map((op) => attempt(op, owner, patient));
    await sleep(2);
    owner.sigstop();
    const pausedAt = Date.now();

    const bumped = await waitFor(`shard ${shard} to get a new epoch while ${ownerId} is frozen`, leaseTtlMs + 6_000, async () => {
      const s = (await shardEpochs()).get(shard)!;
      return s.epoch > e0 ? { ...s, at: Date.now() } : undefined;
    }, 50);
    expect(bumped.owner, 'the new owner').not.toBe(ownerId);
    // The new owner writes the shard.
    await waitFor(`a posting on ${shard} at epoch > ${e0}`, 10_000, async () => {
      const [r] = await query<{ n: bigint }>('SELECT count(*) AS n FROM journal WHERE account_id = ANY($1) AND epoch > $2', [inShard, e0]);
      return r!.n > 0n ? true : undefined;
    });
    const pauseMs = Math.max(leaseTtlMs + 1_000, Date.now() - pausedAt);
    await sleep(pauseMs - (Date.now() - pausedAt));
    owner.sigcont();
    const resumedAt = Date.now();

    // The frozen requests get their answers now; an unacknowledged one is retried elsewhere
    // with its key, like any client would.
    const firstAnswers = await Promise.all(pending);
    const fencedLogs = (owner.output().match(/shard fenced/g) ?? []).length;
    const lostLogs = (owner.output().match(/lease lost|lease expired/g) ?? []).length;
    await Promise.all(pendingOps.filter((op) => !isAck(op.final)).map((op) => runOp(op, { retry: true })));
    await patient.destroy();
    // Traffic continues, now also through the woken node.
    await sleep(2_000);
    const ops = await stream.stop();
    console.info(
      `pause: ${ownerId} frozen ${resumedAt - pausedAt} ms; ${shard} epoch ${e0} -> ${bumped.epoch} (${bumped.owner}) after ${bumped.at - pausedAt} ms; ` +
        `requests frozen on it answered ${firstAnswers.map((a) => `${a.status}${a.code ? `/${a.code}` : ''}`).join(' ')}; ` +
        `its log: ${fencedLogs} "shard fenced", ${lostLogs} lease lost/expired; ${summarize(ops)}`,
    );

    // Per account, in seq order: once the new owner wrote, no posting carries an older epoch.
    const rows = await query<{ account_id: string; seq: bigint; epoch: bigint; node_id: string }>(
      'SELECT account_id, seq, epoch, node_id FROM journal WHERE account_id = ANY($1) ORDER BY account_id, seq', [inShard],
    );
    const stale: string[] = [];
    const newest = new Map<string, bigint>();
    for (const r of rows) {
      const seen = newest.get(r.account_id);
      if (seen !== undefined && seen > e0 && r.epoch <= e0) stale.push(`${r.account_id} seq ${r.seq} epoch ${r.epoch} by ${r.node_id}`);
      if (seen === undefined || r.epoch > seen) newest.set(r.account_id, r.epoch);
    }
    expect(stale, 'postings at the frozen owner\'s epoch after the new owner wrote').toEqual([]);
    expect(owner.alive, `${ownerId} survives being fenced`).toBe(true);
    expect([...ops, ...pendingOps].filter((o) => !isAck(o.final)).map((o) => `${o.key}: ${o.attempts.map((a) => a.status).join(',')}`), 'transfers never acknowledged').toEqual([]);
    await expectAckedExactlyOnce([...ops, ...pendingOps]);
    await expectInvariants('pause');
  }, 60_000);

  it('Redis: one master of three down changes nothing; two down stop every write within a TTL; back, writes resume', async () => {
    await settledMap();
    const epochs0 = await shardEpochs();

    // Minority down: leases are still held and extended (no epoch moves), no client sees an error.
    await redis!.kill(0);
    const minority = startStream({ workers: 12, pair: randomPair(), retry: false });
    await sleep(leaseTtlMs * 2.5);
    const minorityOps = await minority.stop();
    const epochs1 = await shardEpochs();
    const moved = [...epochs1].filter(([id, s]) => s.epoch !== epochs0.get(id)?.epoch).map(([id]) => id);
    console.info(`redis 1/3 down: ${summarize(minorityOps)}; shards re-taken: ${moved.length}`);
    expect(minorityOps.filter((o) => !isAck(o.final)).map((o) => `${o.key}: ${o.attempts.map((a) => `${a.status}/${a.code}@${a.node}`).join(',')}`), 'answers other than 201/202 with one master down').toEqual([]);
    expect(moved, 'shards whose epoch moved with one master down (a lease was lost)').toEqual([]);

    // Majority down: within one TTL every write answers 503 with Retry-After, nothing commits.
    await redis!.kill(1);
    const downAt = Date.now();
    const majority = startStream({ workers: 8, pair: randomPair(), retry: false });
    // A write that passed its lease check before the deadline may still commit a moment later
    // (its epoch is valid); after that the journal must not grow until the masters are back.
    await sleep(leaseTtlMs + 750);
    const journalRows = async (): Promise<bigint> => (await query<{ n: bigint }>('SELECT count(*) AS n FROM journal'))[0]!.n;
    const rowsAtTtl = await journalRows();
    await sleep(1_250);
    const majorityOps = await majority.stop();
    const rowsAtEnd = await journalRows();
    // The last extension that reached a majority happened before the kill (downAt is taken after
    // the process exited), so no lease is valid past downAt + TTL: a write sent after that must fail.
    const fenceAt = downAt + leaseTtlMs;
    const late = majorityOps.flatMap((o) => o.attempts).filter((a) => a.t0 >= fenceAt);
    const okAttempts = majorityOps.flatMap((o) => o.attempts).filter((a) => isAck(a.status));
    const lastOk = Math.max(0, ...okAttempts.map((a) => a.t1));
    const lastOkSent = Math.max(0, ...okAttempts.map((a) => a.t0));
    const [lastRow] = await query<{ at: Date | null }>('SELECT max(created_at) AS at FROM journal');
    const [committed] = await query<{ n: bigint }>('SELECT count(*) AS n FROM journal WHERE created_at > $1', [new Date(fenceAt)]);
    const epochs2 = await shardEpochs();
    console.info(
      `redis 2/3 down: last acknowledged write sent +${lastOkSent - downAt} ms, answered +${lastOk - downAt} ms after the second kill; ` +
        `last posting created +${lastRow!.at ? lastRow!.at.getTime() - downAt : 'n/a'} ms; ${summarize(majorityOps)}; ` +
        `${late.length} attempts after one TTL`,
    );
    expect(late.length, 'writes attempted after one TTL').toBeGreaterThan(0);
    expect(late.filter((a) => a.status !== 503 || a.retryAfter === undefined).map((a) => `${a.status}/${a.code}@${a.node} retry-after=${a.retryAfter}`).slice(0, 20),
      'writes after one TTL that did not answer 503 with Retry-After').toEqual([]);
    expect(committed!.n, 'postings committed after one TTL with the majority down (by created_at)').toBe(0n);
    expect(rowsAtEnd - rowsAtTtl, 'journal rows added after one TTL with the majority down').toBe(0n);
    expect([...epochs2].filter(([id, s]) => s.epoch !== epochs1.get(id)?.epoch).map(([id]) => id), 'epochs bumped without a majority').toEqual([]);
    // A 503 is "retry with the same key", not "nothing happened" (a commit whose answer was
    // lost is one too); the retries after recovery below prove those are applied once.
    const unacked = majorityOps.filter((o) => !isAck(o.final));
    const applied = await query<{ k: string; id: string }>(`SELECT metadata->>'k' AS k, id FROM transfers WHERE metadata->>'k' = ANY($1)`, [unacked.map((o) => o.key)]);
    for (const a of applied) {
      const op = unacked.find((o) => o.key === a.k)!;
      console.info(`redis 2/3 down: ${a.id} answered ${op.attempts.map((x) => `${x.status}/${x.code}@${x.node} sent +${x.t0 - downAt} ms answered +${x.t1 - downAt} ms`).join(', ')} but was applied`);
    }

    // Masters back (empty: the leases are gone): writes resume within a few seconds.
    await redis!.restart(0);
    await redis!.restart(1);
    const backAt = Date.now();
    const resumedAt = await waitFor('a 201 after the masters came back', 15_000, async () => {
      const op = newOp(...randomPair()());
      await runOp(op, { retry: false });
      return op.final === 201 ? Date.now() : undefined;
    }, 50);
    await settledMap();
    const after = startStream({ workers: 12, pair: randomPair(), retry: true });
    // Clients retry what the outage refused, with the same keys: each is applied exactly once.
    await Promise.all(unacked.map((op) => runOp(op, { retry: true })));
    await sleep(2_000);
    const afterOps = await after.stop();
    console.info(`redis back: first 201 after ${resumedAt - backAt} ms; then ${summarize(afterOps)}`);
    expect(resumedAt - backAt, 'first 201 after the masters came back (ms)').toBeLessThanOrEqual(leaseTtlMs + 5_000);
    expect([...afterOps, ...unacked].filter((o) => !isAck(o.final)).length, 'transfers never acknowledged after recovery').toBe(0);
    await expectAckedExactlyOnce([...minorityOps, ...majorityOps, ...afterOps]);
    await expectInvariants('redis');
  }, 90_000);

  it('join: a new node receives shards by hand-over while clients see only 201/202 or retryable 503', async () => {
    await settledMap();
    // The region that lost a node to the kill scenario.
    const region = Object.keys(regionSizes).sort((a, b) => c().live(a).length - c().live(b).length)[0]!;
    const epochs0 = await shardEpochs();
    const stream = startStream({ workers: 16, pair: randomPair(), retry: true });
    await sleep(1_000);
    const joinAt = Date.now();
    const joined = await c().addNode(region);
    const firstAt = await waitFor(`${joined.nodeId} to own a shard`, 20_000, async () => (ownedBy(await map(), joined.nodeId).length > 0 ? Date.now() : undefined), 50);
    const settled = await settledMap();
    const mine = ownedBy(settled, joined.nodeId);
    await sleep(1_000);
    const ops = await stream.stop();
    const epochs1 = await shardEpochs();
    const regionShards = settled.shards.filter((s) => s.region === region).length;
    console.info(
      `join: ${joined.nodeId} owned its first shard ${firstAt - joinAt} ms after start was called, ${mine.length} of ${regionShards} ${region} shards when settled; ${summarize(ops)}`,
    );

    expect(mine.length, `${joined.nodeId}'s share of ${region}`).toBeGreaterThanOrEqual(Math.floor(regionShards / c().live(region).length));
    for (const id of mine) expect(epochs1.get(id)!.epoch, `epoch of ${id} after its move`).toBeGreaterThan(epochs0.get(id)!.epoch);
    const attempts = ops.flatMap((o) => o.attempts);
    expect(attempts.filter((a) => !(isAck(a.status) || (a.status === 503 && a.retryAfter !== undefined))).map((a) => `${a.status}/${a.code}@${a.node}`).slice(0, 20),
      'answers during the move other than 201/202 or 503 with Retry-After').toEqual([]);
    expect(ops.filter((o) => !isAck(o.final)).length, 'transfers never acknowledged').toBe(0);
    await expectAckedExactlyOnce(ops);
    await expectInvariants('join');
  }, 60_000);

  it('cross-region transfers settle exactly once, and wait (debited) while the destination region is down', async () => {
    await settledMap();
    // Every pair of regions, both ways.
    const regions = Object.keys(regionSizes);
    const crossOps: Op[] = [];
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 6; i++) {
        const from = pick(regions);
        const to = pick(regions.filter((r) => r !== from));
        const op = newOp(...randomPair(accountsByRegion.get(from)!, accountsByRegion.get(to)!)());
        crossOps.push(op);
        await runOp(op, { retry: true });
      }
    }));
    expect(crossOps.filter((o) => !isAck(o.final)).length, 'cross-region transfers never acknowledged').toBe(0);
    expect(await waitForNothingInFlight(), 'cross-region transfers in flight').toBe(0);
    await expectAckedExactlyOnce(crossOps);

    // The destination region goes down (graceful stop: leases released); failover is denied.
    const down = 'ap';
    const downNodes = c().live(down).map((n) => n.nodeId);
    await Promise.all(c().live(down).map((n) => n.stop()));
    // The map names the last node to take each shard; owned means that node is a live member.
    await waitFor(`no ${down} shard owned by a live node`, leaseTtlMs + 5_000, async () => {
      const m = await map();
      const members = new Set(m.nodes.map((n) => n.nodeId));
      return m.shards.some((s) => s.region === down && s.owner !== null && members.has(s.owner)) ? undefined : true;
    }, 200);
    const epochsDown = await shardEpochs();
    const waiting = Array.from({ length: 6 }, (_, i) => newOp(pick(accountsByRegion.get(i % 2 === 0 ? 'eu' : 'us')!), pick(accountsByRegion.get(down)!)));
    await Promise.all(waiting.map((op) => runOp(op, { retry: true, deadlineMs: 5_000 })));
    expect(waiting.map((o) => o.final), 'transfers into the stopped region are accepted (202)').toEqual(waiting.map(() => 202));
    // The relay keeps trying; the money stays in flight, not credited and not returned.
    await sleep(3_000);
    for (const op of waiting) {
      const t = await mustGet(`/v1/transfers/${op.transferId}`);
      expect(t.state, `state of ${op.transferId} while ${down} is down`).toBe('debited');
    }
    const [credited] = await query<{ n: bigint }>('SELECT count(*) AS n FROM journal WHERE transfer_id = ANY($1) AND amount > 0', [waiting.map((o) => o.transferId)]);
    expect(credited!.n, 'credits applied while the region was down').toBe(0n);
    const epochsStill = await shardEpochs();
    expect([...epochsStill].filter(([id, s]) => id.startsWith(`${down}/`) && s.epoch !== epochsDown.get(id)!.epoch).map(([id]) => id), `${down} shards taken with REGION_FAILOVER=deny`).toEqual([]);

    // The region returns (same node names, as a supervisor would restart them): the credits land once.
    const backAt = Date.now();
    await Promise.all(downNodes.map((nodeId) => c().addNode(down, { nodeId })));
    const settledAt = await waitFor('the waiting transfers to settle', 20_000, async () => {
      const [r] = await query<{ n: bigint }>(`SELECT count(*) AS n FROM transfers WHERE id = ANY($1) AND state = 'settled'`, [waiting.map((o) => o.transferId)]);
      return r!.n === BigInt(waiting.length) ? Date.now() : undefined;
    }, 100);
    console.info(`cross-region: ${summarize(crossOps)}; ${waiting.length} transfers into ${down} waited debited and settled ${settledAt - backAt} ms after its nodes were started again`);
    await expectAckedExactlyOnce([...crossOps, ...waiting]);
    await settledMap();
    await expectInvariants('cross-region');
  }, 90_000);
});
