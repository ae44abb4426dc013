// The local 3-region cluster under load (`npm run bench:cluster`): the same cluster as
// `npm run cluster` (3 Redis masters, eu/us/ap x 2 nodes, one PostgreSQL database), driven by
// 64 closed-loop clients spread over every node's URL. Prints throughput and p50/p99 of a
// uniform and a hot-account workload, then the failover time after a kill -9 of a shard
// owner, and ends with the ledger checker on the database.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Agent, Pool } from 'undici';
import { clusterMap, waitFor, type ClusterMap, type ClusterNode } from '../test/helpers/cluster.ts';
import { api, type Api, type ApiResponse } from '../test/helpers/server-process.ts';
import { defaultOptions, startLocalCluster, type RunningCluster } from '../scripts/cluster.ts';
import { check, formatResult } from './checker.ts';

// Read once: the bench has no config module of its own.
const settings = Object.freeze({
  measureSeconds: Number(process.env.BENCH_SECONDS ?? 12),
  warmupSeconds: 2,
  clients: 64,
  setupClients: 48,
  accountsPerRegion: Number(process.env.BENCH_ACCOUNTS_PER_REGION ?? 1_000),
  hotSources: 1_000,
  fundingMinor: 1_000_000_000n,
  maxAmountMinor: 100,
  /** The nodes' lease TTL: theirs by default (LEASE_TTL_MS reaches them through the environment). */
  leaseTtlMs: Number(process.env.LEASE_TTL_MS || 10_000),
  /** Failover probe: how long to wait for a write on the dead owner's shard at all. */
  failoverDeadlineMs: 60_000,
  settleTimeoutMs: 60_000,
});
for (const [k, v] of [['BENCH_SECONDS', settings.measureSeconds], ['BENCH_ACCOUNTS_PER_REGION', settings.accountsPerRegion], ['LEASE_TTL_MS', settings.leaseTtlMs]] as const) {
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${k} must be a positive number, got ${String(v)}`);
}

const regions = ['eu', 'us', 'ap'];

interface PhaseResult {
  workload: string;
  seconds: number;
  requests: number;
  settled: number;
  accepted: number;
  rejected: Map<string, number>;
  latenciesMs: Float64Array;
}

const ms = (ns: bigint): number => Number(ns) / 1e6;
const pickFrom = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Setup POST that must succeed: retries the retryable answers with the same key. */
async function mustPost(client: Api, path: string, body: unknown, want: number[]): Promise<ApiResponse> {
  const key = randomUUID();
  for (let attempt = 0; ; attempt++) {
    const res = await client.post(path, body, key);
    if (want.includes(res.status)) return res;
    if ((res.status !== 503 && res.status !== 409) || attempt >= 30) {
      throw new Error(`setup POST ${path} answered ${res.status}: ${JSON.stringify(res.body)}`);
    }
    await sleep(50 * Math.min(attempt + 1, 10));
  }
}

/** Closed loop: client i talks to node i mod n, so the load is spread over every node's URL. */
async function runPhase(workload: string, clients: Api[], pickPair: () => [string, string]): Promise<PhaseResult> {
  let measuring = false;
  let stopped = false;
  let requests = 0;
  let settled = 0;
  let accepted = 0;
  const rejected = new Map<string, number>();
  const latencies: number[] = [];
  const worker = async (client: Api): Promise<void> => {
    while (!stopped) {
      const [source, destination] = pickPair();
      const amount = String(1 + Math.floor(Math.random() * settings.maxAmountMinor));
      const inWindow = measuring;
      const t0 = process.hrtime.bigint();
      let outcome: string;
      try {
        const res = await client.post('/v1/transfers', { sourceAccountId: source, destinationAccountId: destination, amount, currency: 'USD' }, randomUUID());
        outcome = String(res.status);
        if (res.status >= 400 && typeof res.body === 'object' && res.body?.code) outcome += `/${res.body.code as string}`;
      } catch (err) {
        outcome = `err:${(err as { code?: string }).code ?? 'unknown'}`;
      }
      const t1 = process.hrtime.bigint();
      // Only requests that started and ended inside the window count.
      if (!inWindow || stopped) continue;
      requests++;
      if (outcome === '201' || outcome === '202') {
        if (outcome === '201') settled++;
        else accepted++;
        latencies.push(ms(t1 - t0));
      } else {
        rejected.set(outcome, (rejected.get(outcome) ?? 0) + 1);
      }
    }
  };
  const workers = Array.from({ length: settings.clients }, (_, i) => worker(clients[i % clients.length]!));
  await sleep(settings.warmupSeconds * 1000);
  const start = process.hrtime.bigint();
  measuring = true;
  await sleep(settings.measureSeconds * 1000);
  stopped = true;
  const seconds = ms(process.hrtime.bigint() - start) / 1000;
  await Promise.all(workers);
  return { workload, seconds, requests, settled, accepted, rejected, latenciesMs: Float64Array.from(latencies).sort() };
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const rate = (r: PhaseResult): number => (r.settled + r.accepted) / r.seconds;

function printTable(results: PhaseResult[]): void {
  const header = ['workload', 'requests', 'ok (201/202)', 'rejected', 'transfers/s', 'p50 ms', 'p99 ms'];
  const rows = results.map((r) => [
    r.workload,
    String(r.requests),
    `${r.settled + r.accepted} (${r.settled}/${r.accepted})`,
    r.rejected.size === 0 ? '0' : [...r.rejected].map(([s, n]) => `${s}:${n}`).join(' '),
    rate(r).toFixed(0),
    percentile(r.latenciesMs, 0.5).toFixed(2),
    percentile(r.latenciesMs, 0.99).toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
}

async function liveMap(nodes: ClusterNode[], adminKey: string): Promise<ClusterMap> {
  return waitFor('GET /v1/cluster to answer 200', 30_000, async () => {
    for (const n of nodes.filter((x) => x.alive)) {
      const m = await clusterMap(n.url, adminKey);
      if (m) return m;
    }
    return undefined;
  }, 200);
}

interface Failover {
  victim: string;
  shard: string;
  epochBefore: bigint;
  epochBumpMs: number | undefined;
  firstPostingMs: number | undefined;
  first201Ms: number | undefined;
}

/**
 * kill -9 the owner of a busy eu shard, then measure three instants after the kill: the epoch
 * bump in `shards` (someone took the lease), the first posting on the shard at a newer epoch
 * (journal, the writer's clock), and the first 201 of a client debiting an account of the
 * shard continuously through the surviving nodes (each try a new transfer, each kept to one key).
 */
async function measureFailover(r: RunningCluster, sql: pg.Pool, tenantKey: string, accountsByRegion: Map<string, string[]>, dispatcher: Agent): Promise<Failover> {
  const map = await liveMap(r.cluster.nodes, r.adminKey);
  const owners = new Map(map.shards.map((s) => [s.id, s.owner]));
  const eu = accountsByRegion.get('eu')!;
  const { rows } = await sql.query<{ id: string; shard: string }>('SELECT id, shard FROM accounts WHERE id = ANY($1)', [eu]);
  const byShard = new Map<string, string[]>();
  for (const row of rows) byShard.set(row.shard, [...(byShard.get(row.shard) ?? []), row.id]);
  // The eu shard with the most accounts whose owner is a live eu node.
  const [shard, inShard] = [...byShard].filter(([s]) => owners.get(s)?.startsWith('eu-')).sort((a, b) => b[1].length - a[1].length)[0]!;
  const victim = r.cluster.node(owners.get(shard)!);
  const others = accountsByRegion.get('us')!;
  const epochBefore = BigInt((await sql.query<{ e: string }>('SELECT epoch::text AS e FROM shards WHERE id = $1', [shard])).rows[0]!.e);

  let killedAt = 0;
  let first201: number | undefined;
  let stop = false;
  // Four probes in flight, through the surviving nodes only. Only an attempt sent after the
  // kill counts: an answer relayed from the victim just before it died must not.
  const probe = async (): Promise<void> => {
    while (!stop) {
      const key = randomUUID();
      const body = { sourceAccountId: pickFrom(inShard), destinationAccountId: pickFrom(others), amount: '1', currency: 'USD' };
      for (;;) {
        if (stop) return;
        const targets = r.cluster.live().filter((n) => n.nodeId !== victim.nodeId);
        const sentAt = Date.now();
        const res = await api(pickFrom(targets).url, tenantKey, { dispatcher }).post('/v1/transfers', body, key).catch(() => undefined);
        const ok = res?.status === 201 || res?.status === 202;
        if (res?.status === 201 && killedAt > 0 && sentAt >= killedAt && first201 === undefined) first201 = Date.now() - killedAt;
        // Retry the same key on "later" answers and on no answer; anything else ends this transfer.
        if (ok || (res !== undefined && res.status !== 503 && res.status !== 409)) break;
        await sleep(5);
      }
      if (killedAt === 0) await sleep(20);
    }
  };
  const probes = Array.from({ length: 4 }, probe);
  await sleep(1_000);
  killedAt = Date.now();
  await victim.kill('SIGKILL');

  let epochBumpMs: number | undefined;
  let firstPostingMs: number | undefined;
  const deadline = killedAt + settings.failoverDeadlineMs;
  while (Date.now() < deadline && (epochBumpMs === undefined || firstPostingMs === undefined || first201 === undefined)) {
    if (epochBumpMs === undefined) {
      const e = BigInt((await sql.query<{ e: string }>('SELECT epoch::text AS e FROM shards WHERE id = $1', [shard])).rows[0]!.e);
      if (e > epochBefore) epochBumpMs = Date.now() - killedAt;
    }
    if (firstPostingMs === undefined) {
      const p = await sql.query<{ at: Date | null }>('SELECT min(created_at) AS at FROM journal WHERE account_id = ANY($1) AND epoch > $2', [inShard, epochBefore.toString()]);
      const at = p.rows[0]?.at;
      if (at) firstPostingMs = at.getTime() - killedAt;
    }
    await sleep(10);
  }
  stop = true;
  await Promise.all(probes);
  return { victim: victim.nodeId, shard, epochBefore, epochBumpMs, firstPostingMs, first201Ms: first201 };
}

async function main(): Promise<number> {
  const opts = defaultOptions();
  opts.adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  opts.env.LOG_LEVEL = process.env.LOG_LEVEL ?? 'warn';
  // A bench drives one tenant far past any production rate limit (startServer lifts them too).
  let running: RunningCluster | undefined;
  let finished = false;
  const pools: Pool[] = [];
  let agent: Agent | undefined;
  let sql: pg.Pool | undefined;
  const onSignal = (): void => {
    console.error('\ninterrupted: stopping the cluster');
    void (running?.shutdown() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const started = Date.now();
    running = await startLocalCluster(opts);
    const r = running;
    for (const n of r.cluster.nodes) {
      void n.exited.then((code) => {
        if (!finished && code !== null) console.error(`node ${n.nodeId} exited during the bench (code ${String(code)}):\n${n.output()}`);
      });
    }
    sql = new pg.Pool({ connectionString: r.databaseUrl, max: 4 });
    agent = new Agent({ connections: 16, headersTimeout: 30_000, bodyTimeout: 30_000 });
    const nodes = r.cluster.nodes;
    await liveMap(nodes, r.adminKey);
    console.log(
      `geopay cluster bench: ${nodes.length} nodes (${regions.map((g) => `${g} x${r.cluster.live(g).length}`).join(', ')}), 3 Redis masters, ` +
        `lease TTL ${settings.leaseTtlMs} ms; ${settings.clients} clients, warm-up ${settings.warmupSeconds} s, measure ${settings.measureSeconds} s; started in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );

    // One keep-alive pool per node, as many connections as clients on it.
    const perNode = Math.ceil(settings.clients / nodes.length);
    const adminClients = nodes.map((n) => {
      const p = new Pool(n.url, { connections: perNode, keepAliveTimeout: 60_000 });
      pools.push(p);
      return { node: n, pool: p, admin: api(n.url, r.adminKey, { dispatcher: p }) };
    });
    const setupStart = Date.now();
    const tenantRow = await mustPost(adminClients[0]!.admin, '/v1/tenants', { name: 'bench' }, [201]);
    const keyRow = await mustPost(adminClients[0]!.admin, `/v1/tenants/${tenantRow.body.id}/keys`, undefined, [201]);
    const tenantKey = keyRow.body.key as string;
    const clients = adminClients.map((a) => api(a.node.url, tenantKey, { dispatcher: a.pool }));
    const nodeOf = (region: string, i: number): Api => {
      const inRegion = adminClients.map((a, k) => [a, k] as const).filter(([a]) => a.node.region === region);
      return clients[inRegion[i % inRegion.length]![1]]!;
    };

    const accountsByRegion = new Map<string, string[]>();
    for (const region of regions) {
      const opened = await inParallel(Array.from({ length: settings.accountsPerRegion }), settings.setupClients, (_, i) =>
        mustPost(nodeOf(region, i), '/v1/accounts', { currency: 'USD', region }, [201]),
      );
      accountsByRegion.set(region, opened.map((o) => o.body.id as string));
    }
    // The hot destination is extra (eu), so the uniform phase does not also land on it.
    const hotDestination = (await mustPost(nodeOf('eu', 0), '/v1/accounts', { currency: 'USD', region: 'eu' }, [201])).body.id as string;
    const accounts = [...accountsByRegion.values()].flat();
    await inParallel(accounts, settings.setupClients, (accountId, i) =>
      mustPost(clients[i % clients.length]!, '/v1/deposits', { accountId, amount: String(settings.fundingMinor), currency: 'USD' }, [201, 202]),
    );
    console.log(`setup: ${accounts.length + 1} accounts opened (${settings.accountsPerRegion} per region + 1 hot), ${accounts.length} funded in ${((Date.now() - setupStart) / 1000).toFixed(1)} s`);

    const hotSources = accounts.filter((_, i) => i % Math.max(1, Math.floor(accounts.length / settings.hotSources)) === 0).slice(0, settings.hotSources);
    const uniform = await runPhase('uniform', clients, () => {
      const source = pickFrom(accounts);
      let destination = pickFrom(accounts);
      while (destination === source) destination = pickFrom(accounts);
      return [source, destination];
    });
    const hot = await runPhase('hot', clients, () => [pickFrom(hotSources), hotDestination]);
    console.log('');
    printTable([uniform, hot]);
    console.log(`(uniform: any two accounts, 2/3 of pairs cross-region; hot: ${hotSources.length} sources in all regions -> one eu account)`);

    console.log('');
    const f = await measureFailover(r, sql, tenantKey, accountsByRegion, agent);
    const fmt = (v: number | undefined): string => (v === undefined ? `none within ${settings.failoverDeadlineMs} ms` : `${v} ms`);
    console.log(`failover: kill -9 of ${f.victim}, owner of ${f.shard} (epoch ${f.epochBefore}), lease TTL ${settings.leaseTtlMs} ms`);
    console.log(`  epoch bumped by the new owner:        ${fmt(f.epochBumpMs)}`);
    console.log(`  first posting at the new epoch:       ${fmt(f.firstPostingMs)} (journal created_at)`);
    console.log(`  first 201 on an account of the shard: ${fmt(f.first201Ms)} (client, retrying continuously)`);

    console.log('');
    const result = await check(sql, { settleTimeoutMs: settings.settleTimeoutMs });
    console.log(formatResult(result));
    const failures = [...(result.ok ? [] : ['ledger checker failed'])];
    if (uniform.settled + uniform.accepted === 0 || hot.settled + hot.accepted === 0) failures.push('a workload completed no transfer');
    if (f.first201Ms === undefined) failures.push('no write on the dead owner\'s shard after the failover');
    for (const x of failures) console.log(`  ${x}`);
    console.log(failures.length === 0 ? 'ledger: PASS' : 'ledger: FAIL');
    return failures.length === 0 ? 0 : 1;
  } finally {
    finished = true;
    await Promise.all(pools.map((p) => p.destroy()));
    await agent?.destroy();
    await sql?.end();
    await running?.shutdown();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
