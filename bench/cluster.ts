// The local 3-region cluster under load (`npm run bench:cluster`): the same cluster as
// `npm run cluster` (3 Redis masters, eu/us/ap x 2 nodes, a database per region), driven by
// 64 closed-loop clients spread over every node's URL. First the same clients on one node (a
// fresh server and database), the baseline of the cluster's ratios, then on 3 nodes of one
// region sharing one database. Prints throughput and p50/p99 of a
// uniform (2/3 cross-region), a domestic and a hot-account workload, the failover time after
// a kill -9 of a shard owner, with --separate-postgres the recovery from a restart of us's
// PostgreSQL, and ends with the cross-database ledger checker on every region's database.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Agent } from 'undici';
import { clusterMap, waitFor, type ClusterMap, type ClusterNode } from '../test/helpers/cluster.ts';
import { api } from '../test/helpers/server-process.ts';
import { startNatsServers, type NatsServers } from '../test/helpers/nats.ts';
import { defaultOptions, describeDatabases, regionPools, startLocalCluster, type RunningCluster } from '../scripts/cluster.ts';
import { checkRegions, formatResult, IN_FLIGHT, settle } from './checker.ts';
import { LoadClient } from './lib/client.ts';
import { onInterrupt, runMain, withOptions } from './lib/main.ts';
import { parseBenchDuration } from './lib/options.ts';
import { anyTwo, crossRegion, measurePhase, pickFrom, sameRegion, transferJobs, type PhaseCommon } from './lib/phases.ts';
import { progress } from './lib/progress.ts';
import type { PhaseReport } from './lib/report.ts';
import { createTenant, inParallel, mustPost, setup, setupKeys } from './lib/setup.ts';
import { rateRatio, transferSummary } from './lib/summary.ts';
import { withFreshServer } from './lib/session.ts';

const SEPARATE_POSTGRES = '--separate-postgres';
const HTTP_LEGS = '--http-legs';

const USAGE = `usage: npm run bench:cluster -- [--duration S] [--separate-postgres] [--http-legs]
  --duration S           measured seconds per workload (default: BENCH_SECONDS, else 12)
  --separate-postgres    each region's database on a PostgreSQL server of its own (default: a
                         database per region on the local PostgreSQL); adds the restart of us's
                         server under a light cross-region load
  --http-legs            legs forwarded by HTTP (LEGS_TRANSPORT=http); by
                         default the bench starts a nats-server of its own and the legs travel
                         on the bus (NATS_URLS)
BENCH_ACCOUNTS_PER_REGION (default 1000) sizes the setup; LEASE_TTL_MS reaches the nodes.
BENCH_WARMUP_SECONDS (default 15): the unmeasured load before the first workload of each
configuration (one node, 3 nodes, 3 regions), so that each is measured with its code compiled
by V8 (a cluster node sees a third or a sixth of the traffic, and warms that much slower).
`;

// Read once: the bench has no config module of its own.
const settings = Object.freeze({
  warmupSeconds: 2,
  /** Before the first workload of each configuration: a node's JIT warm-up (see USAGE). */
  firstWarmupSeconds: Number(process.env.BENCH_WARMUP_SECONDS ?? 15),
  clients: 64,
  setupClients: 48,
  accountsPerRegion: Number(process.env.BENCH_ACCOUNTS_PER_REGION ?? 1_000),
  hotSources: 1_000,
  fundingMinor: 1_000_000_000n,
  maxAmountMinor: 100,
  /** Per attempt; no retries: a 503 while shards move is a figure of the run. */
  requestTimeoutMs: 30_000,
  /** The nodes' lease TTL: theirs by default (LEASE_TTL_MS reaches them through the environment). */
  leaseTtlMs: Number(process.env.LEASE_TTL_MS || 10_000),
  /** Failover probe: how long to wait for a write on the dead owner's shard at all. */
  failoverDeadlineMs: 60_000,
  settleTimeoutMs: 60_000,
  /** The restart: light load this long before us's PostgreSQL stops, and how long it stays down. */
  restartLeadSeconds: 1,
  outageSeconds: 5,
  restartClients: 8,
});
for (const [k, v] of [['BENCH_ACCOUNTS_PER_REGION', settings.accountsPerRegion], ['LEASE_TTL_MS', settings.leaseTtlMs]] as const) {
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${k} must be a positive number, got ${String(v)}`);
}
if (!Number.isFinite(settings.firstWarmupSeconds) || settings.firstWarmupSeconds < 0) {
  throw new Error(`BENCH_WARMUP_SECONDS must be a number >= 0, got ${String(process.env.BENCH_WARMUP_SECONDS)}`);
}

const regions = ['eu', 'us', 'ap'];

/** The run's tenant and accounts, opened region by region through a node of that region. */
interface ClusterSetup {
  tenantId: string;
  tenantKey: string;
  accountsByRegion: Map<string, string[]>;
  /** Extra (eu), so the uniform phase does not also land on it. */
  hotDestination: string;
  seconds: number;
}

async function setupAccounts(r: RunningCluster, clients: LoadClient[], run: string, perRegion = settings.accountsPerRegion): Promise<ClusterSetup> {
  const t0 = performance.now();
  const key = setupKeys(run);
  // A bench drives one tenant far past any production rate limit: the nodes' startServer lifts them.
  const { tenantId, tenantKey } = await createTenant(clients[0]!, { adminKey: r.adminKey, run, liftRateLimits: false }, key);
  const post = (client: LoadClient, op: string, path: string, body: unknown, want: number[]): Promise<any> =>
    mustPost(client, { op, path, body, key: key(op), bearer: tenantKey, tenant: tenantId }, want);
  const nodes = r.cluster.nodes;
  const nodeOf = (region: string, i: number): LoadClient => {
    const inRegion = nodes.map((n, k) => [n, k] as const).filter(([n]) => n.region === region);
    return clients[inRegion[i % inRegion.length]![1]]!;
  };
  const accountsByRegion = new Map<string, string[]>();
  for (const region of r.cluster.regions) {
    const opened = await inParallel(Array.from({ length: perRegion }), settings.setupClients, (_, i) =>
      post(nodeOf(region, i), 'open', '/v1/accounts', { currency: 'USD', region }, [201]));
    accountsByRegion.set(region, opened.map((o) => String(o.id)));
  }
  const hotDestination = String((await post(nodeOf('eu', 0), 'open', '/v1/accounts', { currency: 'USD', region: 'eu' }, [201])).id);
  await inParallel([...accountsByRegion.values()].flat(), settings.setupClients, (accountId, i) =>
    post(clients[i % clients.length]!, 'deposit', '/v1/deposits', { accountId, amount: String(settings.fundingMinor), currency: 'USD' }, [201, 202]));
  return { tenantId, tenantKey, accountsByRegion, hotDestination, seconds: (performance.now() - t0) / 1000 };
}

const closedLoop = (concurrency: number, durationS: number, warmupS: number): PhaseCommon => ({
  engine: 'geopay', load: { mode: 'closed', concurrency }, durationS, warmupS, maxInFlight: concurrency, progress: progress(),
});

/** The first workload of a configuration: after the longer warm-up, the same load unmeasured. */
const firstOf = (common: PhaseCommon): PhaseCommon => ({ ...common, warmupS: Math.max(common.warmupS, settings.firstWarmupSeconds) });

/** Transfers between the accounts `pickPair` names, each request to the next of `clients` in turn. */
const jobsOf = (clients: LoadClient[], s: ClusterSetup, pickPair: () => [string, string]) => transferJobs({
  clients, tenantId: s.tenantId, tenantKey: s.tenantKey, currency: 'USD', maxAmountMinor: settings.maxAmountMinor, pickPair,
});

/**
 * The same load on one node (a fresh server on a fresh database, every shard its own), the
 * cluster's ratios are taken to: uniform over as many accounts as the cluster's, and hot.
 */
async function oneNode(durationS: number, run: string): Promise<{ uniform: PhaseReport; hot: PhaseReport }> {
  const client = { connections: settings.clients, timeoutMs: settings.requestTimeoutMs, retries: 0, run: `${run}one` };
  return withFreshServer(client, async (session) => {
    const accounts = settings.accountsPerRegion * regions.length;
    const s = await setup(session.client, {
      adminKey: session.target.adminKey, run: `${run}one`, concurrency: settings.setupClients, liftRateLimits: true,
      spec: { accounts, currencies: ['USD'], fundingMinor: settings.fundingMinor, overdraftMinor: 0n },
    });
    const ids = s.accounts.byCurrency.get('USD')!;
    const hotSources = ids.slice(0, settings.hotSources);
    const jobs = (pickPair: () => [string, string]) => transferJobs({
      clients: [session.client], tenantId: s.tenantId, tenantKey: s.tenantKey, currency: 'USD', maxAmountMinor: settings.maxAmountMinor, pickPair,
    });
    const common = closedLoop(settings.clients, durationS, settings.warmupSeconds);
    const uniform = await measurePhase(firstOf(common), 'uniform', jobs(anyTwo(ids)));
    const hot = await measurePhase(common, 'hot', jobs(() => [pickFrom(hotSources), s.accounts.merchants.get('USD')!]));
    console.log(`one node (${session.target.url}), ${accounts} accounts, the same clients:\n${transferSummary([uniform, hot])}\n`);
    return { uniform, hot };
  });
}

/**
 * Three nodes of one region on one database (the shards spread over them, a transfer's debit
 * forwarded to its source's owner two times in three), as many accounts and the same clients
 * as one node: uniform and hot, each to its one-node counterpart.
 */
async function oneRegion(durationS: number, run: string, one: { uniform: PhaseReport; hot: PhaseReport }, separatePostgres: boolean): Promise<void> {
  // No bus, like the one node: every leg is domestic, so none would travel by it.
  const r = await startBenchCluster(separatePostgres, undefined, { eu: 3 });
  const offInterrupt = onInterrupt(() => r.shutdown());
  const perNode = Math.ceil(settings.clients / r.cluster.nodes.length);
  const clients = r.cluster.nodes.map((n) => new LoadClient({ url: n.url, connections: perNode, timeoutMs: settings.requestTimeoutMs, retries: 0, log: undefined, run: `${run}r`, engine: 'geopay' }));
  try {
    await liveMap(r.cluster.nodes, r.adminKey);
    const s = await setupAccounts(r, clients, `${run}r`, settings.accountsPerRegion * regions.length);
    const accounts = s.accountsByRegion.get('eu')!;
    const common = closedLoop(settings.clients, durationS, settings.warmupSeconds);
    const uniform = await measurePhase(firstOf(common), 'uniform', jobsOf(clients, s, anyTwo(accounts)));
    const hot = await measurePhase(common, 'hot', jobsOf(clients, s, () => [pickFrom(accounts.slice(0, settings.hotSources)), s.hotDestination]));
    console.log(`3 nodes of one region (eu x3, one database), ${accounts.length} accounts, the same clients:\n${transferSummary([uniform, hot])}`);
    console.log(`3 nodes of one region over one node, transfers/s: uniform ${rateRatio(uniform, one.uniform).toFixed(2)}x, hot ${rateRatio(hot, one.hot).toFixed(2)}x\n`);
  } finally {
    await Promise.all(clients.map((c) => c.destroy()));
    await r.shutdown();
    offInterrupt();
  }
}

/** The cluster's transfers/s over one node's, each workload to its one-node counterpart. */
function printRatios(phases: PhaseReport[], one: { uniform: PhaseReport; hot: PhaseReport }): void {
  const [uniform, domestic, hot] = phases as [PhaseReport, PhaseReport, PhaseReport];
  console.log(`cluster over one node, transfers/s: uniform ${rateRatio(uniform, one.uniform).toFixed(2)}x, domestic ${rateRatio(domestic, one.uniform).toFixed(2)}x (to one node's uniform), hot ${rateRatio(hot, one.hot).toFixed(2)}x`);
}

/** uniform, domestic, then hot. */
async function runWorkloads(clients: LoadClient[], s: ClusterSetup, durationS: number): Promise<PhaseReport[]> {
  const common = closedLoop(settings.clients, durationS, settings.warmupSeconds);
  const accounts = [...s.accountsByRegion.values()].flat();
  const hotSources = accounts.filter((_, i) => i % Math.max(1, Math.floor(accounts.length / settings.hotSources)) === 0).slice(0, settings.hotSources);
  const uniform = await measurePhase(firstOf(common), 'uniform', jobsOf(clients, s, anyTwo(accounts)));
  const domestic = await measurePhase(common, 'domestic', jobsOf(clients, s, sameRegion(s.accountsByRegion)));
  const hot = await measurePhase(common, 'hot', jobsOf(clients, s, () => [pickFrom(hotSources), s.hotDestination]));
  console.log(`\n${transferSummary([uniform, domestic, hot])}`);
  console.log(
    `(uniform: any two accounts, 2/3 of pairs cross-region; domestic: two accounts of one region; ` +
      `hot: ${hotSources.length} sources in all regions -> one eu account)`,
  );
  return [uniform, domestic, hot];
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

/** The eu shard with the most of the run's accounts whose owner is a live eu node, and those accounts. */
async function busiestEuShard(r: RunningCluster, sql: pg.Pool, eu: string[]): Promise<{ shard: string; owner: ClusterNode; inShard: string[] }> {
  const map = await liveMap(r.cluster.nodes, r.adminKey);
  const owners = new Map(map.shards.map((s) => [s.id, s.owner]));
  const { rows } = await sql.query<{ id: string; shard: string }>('SELECT id, shard FROM accounts WHERE id = ANY($1)', [eu]);
  const byShard = new Map<string, string[]>();
  for (const row of rows) byShard.set(row.shard, [...(byShard.get(row.shard) ?? []), row.id]);
  const [shard, inShard] = [...byShard].filter(([s]) => owners.get(s)?.startsWith('eu-')).sort((a, b) => b[1].length - a[1].length)[0]!;
  return { shard, owner: r.cluster.node(owners.get(shard)!), inShard };
}

/**
 * A client debiting accounts of the shard continuously through the surviving nodes (each try a
 * new transfer, each kept to one key); resolves at `stop()` with the first 201 after the kill.
 */
function probeWrites(r: RunningCluster, victim: ClusterNode, tenantKey: string, inShard: string[], others: string[], dispatcher: Agent) {
  let killedAt = 0;
  let first201: number | undefined;
  let stopped = false;
  // Only an attempt sent after the kill counts: an answer relayed from the victim just before it died must not.
  const probe = async (): Promise<void> => {
    while (!stopped) {
      const key = randomUUID();
      const body = { sourceAccountId: pickFrom(inShard), destinationAccountId: pickFrom(others), amount: '1', currency: 'USD' };
      for (;;) {
        if (stopped) return;
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
  // Four probes in flight.
  const probes = Array.from({ length: 4 }, probe);
  return {
    killed: (at: number): void => { killedAt = at; },
    first201: (): number | undefined => first201,
    stop: async (): Promise<void> => {
      stopped = true;
      await Promise.all(probes);
    },
  };
}

/**
 * kill -9 the owner of a busy eu shard, then measure three instants after the kill: the epoch
 * bump in `shards` (someone took the lease), the first posting on the shard at a newer epoch
 * (journal, the writer's clock), and the first 201 of the probing client.
 */
async function measureFailover(r: RunningCluster, sql: pg.Pool, tenantKey: string, accountsByRegion: Map<string, string[]>, dispatcher: Agent): Promise<Failover> {
  const { shard, owner: victim, inShard } = await busiestEuShard(r, sql, accountsByRegion.get('eu')!);
  const epochOf = async (): Promise<bigint> => BigInt((await sql.query<{ e: string }>('SELECT epoch::text AS e FROM shards WHERE id = $1', [shard])).rows[0]!.e);
  const epochBefore = await epochOf();
  const probes = probeWrites(r, victim, tenantKey, inShard, accountsByRegion.get('us')!, dispatcher);
  await sleep(1_000);
  const killedAt = Date.now();
  probes.killed(killedAt);
  await victim.kill('SIGKILL');

  let epochBumpMs: number | undefined;
  let firstPostingMs: number | undefined;
  const deadline = killedAt + settings.failoverDeadlineMs;
  while (Date.now() < deadline && (epochBumpMs === undefined || firstPostingMs === undefined || probes.first201() === undefined)) {
    if (epochBumpMs === undefined && (await epochOf()) > epochBefore) epochBumpMs = Date.now() - killedAt;
    if (firstPostingMs === undefined) {
      const p = await sql.query<{ at: Date | null }>('SELECT min(created_at) AS at FROM journal WHERE account_id = ANY($1) AND epoch > $2', [inShard, epochBefore.toString()]);
      const at = p.rows[0]?.at;
      if (at) firstPostingMs = at.getTime() - killedAt;
    }
    await sleep(10);
  }
  await probes.stop();
  return { victim: victim.nodeId, shard, epochBefore, epochBumpMs, firstPostingMs, first201Ms: probes.first201() };
}

function printFailover(f: Failover): void {
  const fmt = (v: number | undefined): string => (v === undefined ? `none within ${settings.failoverDeadlineMs} ms` : `${v} ms`);
  console.log(`failover: kill -9 of ${f.victim}, owner of ${f.shard} (epoch ${f.epochBefore}), lease TTL ${settings.leaseTtlMs} ms`);
  console.log(`  epoch bumped by the new owner:        ${fmt(f.epochBumpMs)}`);
  console.log(`  first posting at the new epoch:       ${fmt(f.firstPostingMs)} (journal created_at)`);
  console.log(`  first 201 on an account of the shard: ${fmt(f.first201Ms)} (client, retrying continuously)`);
}

interface Restart {
  region: string;
  /** From the stop's start to the start's start: the server was down this long. */
  downMs: number;
  /** start() until the server accepted connections again. */
  upMs: number;
  /** From the start of the restart: the load's last answer, then no transfer in flight in any region's database. */
  drainedMs: number;
  settledMs: number;
  /** Transfers still in flight when the wait for them gave up (0: everything settled). */
  unsettled: number;
  load: PhaseReport;
}

/**
 * Under a light cross-region load, stops one region's PostgreSQL server for a few seconds and
 * starts it again; the load ends as the restart begins, so what is measured is how long the
 * transfers caught in the outage take to settle once the server is back.
 */
async function measureRestart(r: RunningCluster, clients: LoadClient[], s: ClusterSetup, pools: Record<string, pg.Pool>, region: string): Promise<Restart> {
  const server = r.pgInstances![region]!;
  const durationS = settings.restartLeadSeconds + settings.outageSeconds;
  const t0 = performance.now();
  const load = measurePhase(closedLoop(settings.restartClients, durationS, 0), `cross-region, ${region} PostgreSQL down ${settings.outageSeconds} s`,
    jobsOf(clients, s, crossRegion(s.accountsByRegion)));
  const outage = async (): Promise<{ downMs: number; restartAt: number; upMs: number }> => {
    await sleep(settings.restartLeadSeconds * 1000);
    const stoppedAt = performance.now();
    await server.stop();
    await sleep(Math.max(0, t0 + durationS * 1000 - performance.now()));
    const restartAt = performance.now();
    await server.start();
    return { downMs: restartAt - stoppedAt, restartAt, upMs: performance.now() - restartAt };
  };
  const [phase, { downMs, restartAt, upMs }] = await Promise.all([load, outage()]);
  const drainedMs = performance.now() - restartAt;
  const left = await Promise.all(Object.values(pools).map((db) => settle(db, 'transfers', IN_FLIGHT, settings.settleTimeoutMs, [])));
  return { region, downMs, upMs, drainedMs, settledMs: performance.now() - restartAt, unsettled: left.reduce((a, b) => a + b, 0), load: phase };
}

function printRestart(x: Restart): void {
  const ms = (v: number): string => `${Math.round(v)} ms`;
  const line = (label: string, text: string): void => console.log(`  ${label.padEnd(36)} ${text}`);
  console.log(`\n${transferSummary([x.load])}`);
  console.log(`restart: ${x.region}'s PostgreSQL stopped (fast shutdown) for ${ms(x.downMs)}, under ${settings.restartClients} clients of cross-region transfers`);
  line('accepting connections again:', `${ms(x.upMs)} after its start`);
  line('last answer to the load:', `${ms(x.drainedMs)} after the start`);
  if (x.unsettled === 0) line('every transfer in flight settled:', `${ms(x.settledMs)} after the start (no debited/refused row in any region)`);
  else line('NOT settled:', `${x.unsettled} transfers still in flight ${ms(x.settledMs)} after the start`);
}

/** The ledger checker across every region's database; what failed, if anything. */
async function checkLedger(pools: Record<string, pg.Pool>, phases: PhaseReport[], f: Failover): Promise<string[]> {
  const result = await checkRegions(pools, { settleTimeoutMs: settings.settleTimeoutMs });
  console.log(formatResult(result));
  const failures = result.ok ? [] : ['ledger checker failed'];
  if (phases.some((p) => p.counts.ok === 0)) failures.push('a workload completed no transfer');
  if (f.first201Ms === undefined) failures.push('no write on the dead owner\'s shard after the failover');
  return failures;
}

async function startBenchCluster(separatePostgres: boolean, natsUrls: string[] | undefined, nodesByRegion?: Record<string, number>): Promise<RunningCluster> {
  const opts = defaultOptions();
  if (nodesByRegion) opts.regions = nodesByRegion;
  if (natsUrls) Object.assign(opts.env, { NATS_URLS: natsUrls.join(','), NATS_REPLICAS: '1' });
  else opts.env.LEGS_TRANSPORT = 'http';
  // A database per region, whatever DATABASE_URL says: that is what this bench measures.
  opts.databaseUrl = '';
  opts.separatePostgres = separatePostgres;
  opts.adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  opts.env.LOG_LEVEL = process.env.LOG_LEVEL ?? 'warn';
  return startLocalCluster(opts);
}

async function main(durationS: number, separatePostgres: boolean, httpLegs: boolean): Promise<number> {
  const run = `cluster${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  let running: RunningCluster | undefined;
  let nats: NatsServers | undefined;
  let finished = false;
  let clients: LoadClient[] = [];
  let agent: Agent | undefined;
  let pools: Record<string, pg.Pool> = {};
  const offInterrupt = onInterrupt(async () => { await running?.shutdown(); await nats?.stopAll(); });
  try {
    // One node first, alone on the machine; then the cluster.
    const one = await oneNode(durationS, run);
    await oneRegion(durationS, run, one, separatePostgres);
    const started = Date.now();
    if (!httpLegs) nats = await startNatsServers(1, { namePrefix: 'geopay-bench-cluster' });
    running = await startBenchCluster(separatePostgres, nats?.urls);
    const r = running;
    const nodes = r.cluster.nodes;
    for (const n of nodes) {
      void n.exited.then((code) => {
        if (!finished && code !== null) console.error(`node ${n.nodeId} exited during the bench (code ${String(code)}):\n${n.output()}`);
      });
    }
    pools = regionPools(r);
    agent = new Agent({ connections: 16, headersTimeout: 30_000, bodyTimeout: 30_000 });
    await liveMap(nodes, r.adminKey);
    console.log(
      `geopay cluster bench: ${nodes.length} nodes (${regions.map((g) => `${g} x${r.cluster.live(g).length}`).join(', ')}), 3 Redis masters, ` +
        `databases ${describeDatabases(r)}, lease TTL ${settings.leaseTtlMs} ms, legs ${nats ? `on the bus (${nats.urls[0]})` : 'by HTTP (LEGS_TRANSPORT=http)'}; ` +
        `${settings.clients} clients, warm-up ${settings.firstWarmupSeconds} s before the first workload and ${settings.warmupSeconds} s before each other, measure ${durationS} s; started in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    // One keep-alive pool per node, as many connections as clients on it.
    const perNode = Math.ceil(settings.clients / nodes.length);
    clients = nodes.map((n) => new LoadClient({ url: n.url, connections: perNode, timeoutMs: settings.requestTimeoutMs, retries: 0, log: undefined, run, engine: 'geopay' }));
    const s = await setupAccounts(r, clients, run);
    const accounts = [...s.accountsByRegion.values()].flat().length;
    console.log(`setup: ${accounts + 1} accounts opened (${settings.accountsPerRegion} per region + 1 hot), ${accounts} funded in ${s.seconds.toFixed(1)} s`);
    const phases = await runWorkloads(clients, s, durationS);
    printRatios(phases, one);

    console.log('');
    const f = await measureFailover(r, pools.eu!, s.tenantKey, s.accountsByRegion, agent);
    printFailover(f);

    if (r.pgInstances) printRestart(await measureRestart(r, clients.filter((_, k) => nodes[k]!.alive), s, pools, 'us'));

    console.log('');
    const failures = await checkLedger(pools, phases, f);
    for (const x of failures) console.log(`  ${x}`);
    console.log(failures.length === 0 ? 'ledger: PASS' : 'ledger: FAIL');
    return failures.length === 0 ? 0 : 1;
  } finally {
    finished = true;
    await Promise.all(clients.map((c) => c.destroy()));
    await agent?.destroy();
    await Promise.all(Object.values(pools).map((p) => p.end()));
    await running?.shutdown();
    await nats?.stopAll();
    offInterrupt();
  }
}

// runBench's one option, plus the flag this bench alone has.
runMain(() => {
  const argv = process.argv.slice(2);
  const duration = (): number | 'help' => parseBenchDuration(argv.filter((a) => a !== SEPARATE_POSTGRES && a !== HTTP_LEGS), process.env.BENCH_SECONDS, 12);
  return withOptions(USAGE, duration, (durationS) => main(durationS, argv.includes(SEPARATE_POSTGRES), argv.includes(HTTP_LEGS)));
});
