// /metrics scraped during a short load and parsed by a Prometheus text parser: every family
// the monitoring needs is there, and the figures agree with what the test sent and was
// answered. The node runs in cluster mode on the local Redis (one master, a key prefix of its
// own), so the lease, membership and Redis families are real too.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { requireBinary } from './helpers/prereq.ts';
import type { PromFamily as Family, PromSample as Sample } from './helpers/prom-text.ts';
import { parsePromText } from './helpers/prom-text.ts';

const BUCKETS = 8;
const ACCOUNTS = 6;
const TRANSFERS = 120;

let t: TestNode;
let tenant: { id: string; key: string };
let accounts: string[];

beforeAll(async () => {
  t = await startTestNode('metrics', {
    redisUrls: 'redis://127.0.0.1:6379', clusterSecret: `gp_cluster_${randomBytes(16).toString('hex')}`,
    redisKeyPrefix: `geopay-test-metrics-${randomBytes(4).toString('hex')}:`, region: 'eu', regions: 'eu', shardBuckets: BUCKETS, pgPoolMax: 5,
  });
  tenant = await t.tenant();
  accounts = [];
  for (let i = 0; i < ACCOUNTS; i++) accounts.push(await t.account(tenant.key));
  for (const a of accounts.slice(0, 3)) expect((await t.deposit(tenant.key, a, '100000')).status).toBe(201);
}, 60_000);
afterAll(async () => { await t?.close(); });

let lastText = '';

async function scrape(): Promise<Map<string, Family>> {
  const r = await t.node.app.inject({ method: 'GET', url: '/metrics' });
  expect(r.statusCode).toBe(200);
  expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  lastText = r.body;
  return parsePromText(r.body);
}

const matches = (s: Sample, want: Record<string, string>): boolean => Object.entries(want).every(([k, v]) => s.labels[k] === v);
/** The sum of a family's samples named `sample` (default: the family's name) whose labels include `want`. */
function total(m: Map<string, Family>, name: string, want: Record<string, string> = {}, sample = name): number {
  const f = m.get(name);
  expect(f, `family ${name}`).toBeDefined();
  return f!.samples.filter((s) => s.name === sample && matches(s, want)).reduce((n, s) => n + s.value, 0);
}
function histogramCount(m: Map<string, Family>, name: string, want: Record<string, string> = {}): number {
  expect(m.get(name)?.type, `histogram ${name}`).toBe('histogram');
  return total(m, name, want, `${name}_count`);
}
const histogramSum = (m: Map<string, Family>, name: string): number => total(m, name, {}, `${name}_sum`);

interface Sent { status: number; replayed: boolean }

/** Transfers between the funded accounts (some refused for funds: the unfunded ones pay too), each key sent once, a few twice. */
async function load(): Promise<{ transfers: Sent[]; midScrape: Map<string, Family> }> {
  const sends: Promise<Sent>[] = [];
  let midScrape: Promise<Map<string, Family>> | undefined;
  for (let i = 0; i < TRANSFERS; i++) {
    const src = accounts[i % ACCOUNTS]!;
    const dst = accounts[(i + 1) % ACCOUNTS]!;
    const key = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: i % ACCOUNTS >= 3 ? '999999' : '7', currency: 'USD' };
    const once = () => t.call('POST', '/v1/transfers', { key: tenant.key, idem: key, body })
      .then((r) => ({ status: r.status, replayed: r.headers['idempotent-replayed'] === 'true' }));
    sends.push(i % 10 === 0 ? once().then(async (first) => { sends.push(once()); return first; }) : once());
    if (i === TRANSFERS / 2) midScrape = scrape();
  }
  // The replays are pushed while the first answers arrive: wait until every promise is in.
  let settled: Sent[] = [];
  while (settled.length < sends.length) settled = await Promise.all([...sends]);
  return { transfers: settled, midScrape: await midScrape! };
}

describe('/metrics', () => {
  it('has every family, with figures that match what was sent and answered', async () => {
    const { transfers, midScrape } = await load();
    expect(midScrape.get('geopay_http_requests_total'), 'a scrape during the load answers').toBeDefined();

    const hold = await t.call('POST', '/v1/holds', { key: tenant.key, idem: idem(), body: { sourceAccountId: accounts[0], destinationAccountId: accounts[1], amount: '5', currency: 'USD' } });
    expect(hold.status, JSON.stringify(hold.body)).toBe(201);
    expect((await t.call('POST', `/v1/holds/${hold.body.id}/capture`, { key: tenant.key, idem: idem(), body: {} })).status).toBe(201);
    expect((await t.call('GET', '/v1/accounts/acc_nope', { key: tenant.key })).status).toBe(404);

    const first = transfers.filter((s) => !s.replayed);
    const acknowledged = first.filter((s) => s.status === 201 || s.status === 202).length;
    const refused = first.filter((s) => s.status === 422).length;
    expect(acknowledged + refused, 'every first request was answered 201/202 or refused 422').toBe(first.length);
    expect(refused, 'the unfunded accounts were refused').toBeGreaterThan(0);
    const replays = transfers.filter((s) => s.replayed).length;
    expect(replays).toBe(TRANSFERS / 10);

    const m = await eventually(async () => {
      const s = await scrape();
      // onResponse runs once the answer is out: the last requests may still be counted.
      expect(total(s, 'geopay_http_requests_total', { route: '/v1/transfers', method: 'POST' })).toBe(transfers.length);
      return s;
    });

    // Money: the transfers counted are the transfers acknowledged, the refusals the 422s.
    const settledOrPending = ['settled', 'pending', 'returned'].reduce((n, outcome) => n + total(m, 'geopay_transfers_total', { kind: 'transfer', outcome }), 0);
    expect(settledOrPending).toBe(acknowledged);
    expect(total(m, 'geopay_transfers_total', { kind: 'transfer', outcome: 'refused' })).toBe(refused);
    expect(total(m, 'geopay_transfers_total', { kind: 'deposit' })).toBe(3);
    expect(total(m, 'geopay_transfers_total', { kind: 'capture' })).toBe(1);
    expect(total(m, 'geopay_holds_total', { action: 'authorize' })).toBe(1);
    expect(total(m, 'geopay_holds_total', { action: 'capture' })).toBe(1);

    // HTTP: the histogram counts what the counter counts, per route; errors by code; replays.
    for (const s of m.get('geopay_http_requests_total')!.samples) {
      expect(histogramCount(m, 'geopay_http_request_duration_seconds', s.labels), JSON.stringify(s.labels)).toBe(s.value);
    }
    // Answers, replays included: a replayed refusal is answered 422 again.
    const answered422 = transfers.filter((s) => s.status === 422).length;
    expect(answered422).toBeGreaterThan(refused);
    expect(total(m, 'geopay_http_requests_total', { route: '/v1/transfers', method: 'POST', status_class: '4xx' })).toBe(answered422);
    expect(total(m, 'geopay_http_errors_total', { code: 'insufficient_funds', status: '422' })).toBe(answered422);
    expect(total(m, 'geopay_http_errors_total', { code: 'account_not_found', status: '404' })).toBe(1);
    expect(total(m, 'geopay_http_requests_total', { route: '/v1/accounts/:id', method: 'GET', status_class: '4xx' })).toBe(1);
    expect(total(m, 'geopay_idempotent_replays_total', { operation: 'POST /v1/transfers' })).toBe(replays);
    expect(total(m, 'geopay_rate_limited_total')).toBe(0);

    actorAndWriterFigures(m);
    clusterFigures(m);
    edgeAndProcessFigures(m);
    noIdsInLabels(m);
  }, 120_000);

  it('is an exposition promtool accepts', () => {
    expect(lastText).not.toBe('');
    const promtool = requireBinary('promtool (Debian package prometheus)', 'promtool', 'apt-get install -y prometheus');
    const r = spawnSync(promtool, ['check', 'metrics'], { input: lastText, encoding: 'utf8' });
    // It parses the whole text (a parse error is reported as such), then lints the names. The
    // only findings allowed are prom-client's own gauges named *_total (nodejs_active_*).
    const findings = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim() !== '');
    expect(findings.filter((l) => !/^nodejs_active_\w+_total non-counter metrics should not have "_total" suffix$/.test(l))).toEqual([]);
    if (findings.length === 0) expect(r.status).toBe(0);
  });
});

function actorAndWriterFigures(m: Map<string, Family>): void {
  expect(total(m, 'geopay_actors_resident')).toBeGreaterThanOrEqual(ACCOUNTS);
  const top = m.get('geopay_mailbox_depth_top')!.samples;
  expect(top.map((s) => s.labels.rank)).toEqual(['1', '2', '3', '4', '5']);
  // Every command that reached an actor found a mailbox: at least the transfers' debits.
  expect(histogramCount(m, 'geopay_mailbox_depth')).toBeGreaterThanOrEqual(TRANSFERS);
  const statements = total(m, 'geopay_commit_statements_total');
  const sets = total(m, 'geopay_actor_batches_committed_total');
  expect(statements).toBeGreaterThan(0);
  expect(sets).toBeGreaterThanOrEqual(statements);
  expect(histogramCount(m, 'geopay_commit_duration_seconds'), 'one latency per statement').toBe(statements);
  expect(histogramCount(m, 'geopay_commit_write_sets'), 'one size per statement').toBe(statements);
  const batches = histogramCount(m, 'geopay_actor_batch_commands');
  expect(batches).toBeGreaterThan(0);
  expect(histogramSum(m, 'geopay_actor_batch_commands'), 'commands per batch add up to at least the batches').toBeGreaterThanOrEqual(batches);
  expect(total(m, 'geopay_writer_queue_length')).toBeGreaterThanOrEqual(0);
}

function clusterFigures(m: Map<string, Family>): void {
  expect(total(m, 'geopay_shards_owned'), 'one node owns every shard of its one region').toBe(BUCKETS);
  expect(total(m, 'geopay_shards_without_owner')).toBe(0);
  expect(total(m, 'geopay_lease_operations_total', { op: 'acquire', result: 'ok' })).toBeGreaterThanOrEqual(BUCKETS);
  expect(m.get('geopay_lease_losses_total')).toBeDefined();
  expect(total(m, 'geopay_fenced_writes_total')).toBe(0);
  expect(m.get('geopay_forwarded_requests_total')).toBeDefined();
  expect(total(m, 'geopay_cluster_members', { member_region: 'eu' })).toBe(1);
  expect(total(m, 'geopay_redis_masters_configured')).toBe(1);
  expect(total(m, 'geopay_redis_masters_reachable')).toBe(1);
  expect(m.get('geopay_redis_command_failures_total')).toBeDefined();
  expect(total(m, 'geopay_transfers_in_flight')).toBeGreaterThanOrEqual(0);
  expect(total(m, 'geopay_transfer_oldest_in_flight_seconds')).toBeGreaterThanOrEqual(0);
  expect(m.get('geopay_relay_redeliveries_total')).toBeDefined();
  expect(m.get('geopay_returns_total')).toBeDefined();
}

function edgeAndProcessFigures(m: Map<string, Family>): void {
  expect(total(m, 'geopay_pg_pool_max')).toBe(5);
  const open = total(m, 'geopay_pg_pool_connections', { state: 'total' });
  expect(open).toBeGreaterThan(0);
  expect(open).toBeLessThanOrEqual(5);
  expect(total(m, 'geopay_pg_pool_connections', { state: 'idle' })).toBeLessThanOrEqual(open);
  expect(total(m, 'geopay_pg_pool_connections', { state: 'waiting' })).toBeGreaterThanOrEqual(0);
  for (const name of ['nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes', 'process_cpu_seconds_total', 'process_resident_memory_bytes']) {
    expect(total(m, name), name).toBeGreaterThan(0);
  }
  expect(m.get('nodejs_gc_duration_seconds')?.type).toBe('histogram');
  // Every geopay sample carries the node's default labels.
  for (const [name, f] of m) {
    if (!name.startsWith('geopay_')) continue;
    for (const s of f.samples) expect(s.labels, name).toMatchObject({ node: t.cfg.nodeId, region: 'eu' });
  }
}

/** Bounded labels: no account, tenant or transfer id anywhere in a label value. */
function noIdsInLabels(m: Map<string, Family>): void {
  const values = [...m.values()].flatMap((f) => f.samples.flatMap((s) => Object.values(s.labels)));
  expect(values.length).toBeGreaterThan(0);
  for (const v of values) {
    expect(v).not.toMatch(/acc_|ten_|trf_|hld_/);
    for (const id of [tenant.id, ...accounts]) expect(v).not.toContain(id);
  }
}

async function eventually<T>(fn: () => Promise<T>, ms = 5_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
