// Transfer legs on the bus against legs forwarded by HTTP (`npm run bench:legs`), in one run: one
// nats-server of the bench's own, then the local cluster of `npm run cluster` (eu/us/ap x 2 nodes,
// fresh databases) once per legs configuration (LEGS_TRANSPORT=http, bus, bus with LEGS_SCOPE=all),
// each under the same 64 closed-loop clients (cross-region, then domestic transfers) and checked by
// the cross-database checker; then bench/webhooks.ts, run as a child, for webhook deliveries/s.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { pino } from 'pino';
import { connectBus, type Bus } from '../src/bus/index.ts';
import { legsStream } from '../src/payments/legs.ts';
import { clusterMap, waitFor } from '../test/helpers/cluster.ts';
import { startNatsServers, type NatsServers } from '../test/helpers/nats.ts';
import { defaultOptions, describeDatabases, regionPools, startLocalCluster, type RunningCluster } from '../scripts/cluster.ts';
import { checkRegions, formatResult, IN_FLIGHT, settle } from './checker.ts';
import { LoadClient } from './lib/client.ts';
import { isInterrupted, onInterrupt, runBench } from './lib/main.ts';
import { crossRegion, measurePhase, sameRegion, transferJobs, type PhaseCommon } from './lib/phases.ts';
import { progress } from './lib/progress.ts';
import type { PhaseReport } from './lib/report.ts';
import { createTenant, inParallel, mustPost, setupKeys } from './lib/setup.ts';
import { sumValues } from './lib/stats.ts';
import { rateRatio, transferSummary } from './lib/summary.ts';
import { fixed, formatTable } from './lib/table.ts';

const USAGE = `usage: npm run bench:legs -- [--duration S]
  --duration S   measured seconds per workload, in each configuration (default: BENCH_SECONDS, else 12);
                 bench:webhooks runs with the same
BENCH_ACCOUNTS_PER_REGION (default 300) sizes each cluster's setup; other variables reach the nodes.
`;

// Read once: the bench has no config module of its own.
const settings = Object.freeze({
  warmupSeconds: 2,
  clients: 64,
  setupClients: 48,
  accountsPerRegion: Number(process.env.BENCH_ACCOUNTS_PER_REGION ?? 300),
  fundingMinor: 1_000_000_000n,
  maxAmountMinor: 100,
  /** Per attempt; no retries: an error is a figure of the configuration. */
  requestTimeoutMs: 30_000,
  settleTimeoutMs: 60_000,
  /** A leg is acked just after its commit: how long the streams get to empty once every transfer settled. */
  streamDrainMs: 5_000,
  startTimeoutMs: 30_000,
});
if (!Number.isSafeInteger(settings.accountsPerRegion) || settings.accountsPerRegion < 2) {
  throw new Error(`BENCH_ACCOUNTS_PER_REGION must be an integer >= 2, got ${String(process.env.BENCH_ACCOUNTS_PER_REGION)}`);
}

/** NATS_URLS is set in all three: only the path of the legs differs between them. */
const CONFIGS = [
  { name: 'http', env: { LEGS_TRANSPORT: 'http' }, about: 'legs forwarded by HTTP between nodes; the edge reads the transfer row every 25 ms' },
  { name: 'bus', env: { LEGS_TRANSPORT: 'bus', LEGS_SCOPE: 'cross-region' }, about: 'legs between regions on the JetStream streams, within a region by HTTP forward' },
  { name: 'bus-all', env: { LEGS_TRANSPORT: 'bus', LEGS_SCOPE: 'all' }, about: 'every leg to another node\'s shard on the streams, within a region too' },
] as const;
type LegsConfig = (typeof CONFIGS)[number];

const WORKLOADS = ['cross-region', 'domestic'] as const;
type WorkloadName = (typeof WORKLOADS)[number];

interface ConfigResult {
  config: LegsConfig;
  phases: Record<WorkloadName, PhaseReport>;
  failures: string[];
}

/** What the run has started and not yet stopped: stopped in this order at the end and on Ctrl-C. */
interface Started {
  webhooks?: () => Promise<void>;
  cluster?: RunningCluster;
  bus?: Bus;
  nats?: NatsServers;
}

async function stopStarted(s: Started): Promise<void> {
  await s.webhooks?.();
  // The nodes first: they drain through the nats-server.
  await s.cluster?.shutdown();
  await s.bus?.close().catch(() => undefined);
  await s.nats?.stopAll();
}

/** The run's tenant and accounts, each region's opened through its own nodes. */
interface LegsSetup {
  tenantId: string;
  tenantKey: string;
  accountsByRegion: Map<string, string[]>;
  seconds: number;
}

async function setupAccounts(r: RunningCluster, clients: LoadClient[], run: string): Promise<LegsSetup> {
  const t0 = performance.now();
  const key = setupKeys(run);
  // A bench drives one tenant far past any production rate limit: the nodes' startServer lifts them.
  const { tenantId, tenantKey } = await createTenant(clients[0]!, { adminKey: r.adminKey, run, liftRateLimits: false }, key);
  const post = (client: LoadClient, op: string, path: string, body: unknown, want: number[]): Promise<any> =>
    mustPost(client, { op, path, body, key: key(op), bearer: tenantKey, tenant: tenantId }, want);
  const accountsByRegion = new Map<string, string[]>();
  for (const region of r.cluster.regions) {
    const own = clients.filter((_, k) => r.cluster.nodes[k]!.region === region);
    const opened = await inParallel(Array.from({ length: settings.accountsPerRegion }), settings.setupClients, (_, i) =>
      post(own[i % own.length]!, 'open', '/v1/accounts', { currency: 'USD', region }, [201]));
    accountsByRegion.set(region, opened.map((o) => String(o.id)));
  }
  await inParallel([...accountsByRegion.values()].flat(), settings.setupClients, (accountId, i) =>
    post(clients[i % clients.length]!, 'deposit', '/v1/deposits', { accountId, amount: String(settings.fundingMinor), currency: 'USD' }, [201, 202]));
  return { tenantId, tenantKey, accountsByRegion, seconds: (performance.now() - t0) / 1000 };
}



/** cross-region, then domestic, each request to the next node in turn. */
async function runWorkloads(clients: LoadClient[], s: LegsSetup, durationS: number): Promise<Record<WorkloadName, PhaseReport>> {
  const common: PhaseCommon = {
    engine: 'geopay', load: { mode: 'closed', concurrency: settings.clients }, durationS, warmupS: settings.warmupSeconds,
    maxInFlight: settings.clients, progress: progress(),
  };
  const jobs = (pickPair: () => [string, string]) => transferJobs({
    clients, tenantId: s.tenantId, tenantKey: s.tenantKey, currency: 'USD', maxAmountMinor: settings.maxAmountMinor, pickPair,
  });
  const cross = await measurePhase(common, 'cross-region', jobs(crossRegion(s.accountsByRegion)));
  const domestic = await measurePhase(common, 'domestic', jobs(sameRegion(s.accountsByRegion)));
  console.log(`\n${transferSummary([cross, domestic])}`);
  return { 'cross-region': cross, domestic };
}

/** Over every region's legs stream: messages ever stored (last seq) and those not yet acked. */
async function legsOnBus(bus: Bus, regions: string[]): Promise<{ stored: number; unacked: number }> {
  let stored = 0;
  let unacked = 0;
  for (const region of regions) {
    // No stream before a bus cluster made one (the http configuration makes none).
    const state = await bus.streamState(legsStream(region)).catch(() => undefined);
    stored += state?.lastSeq ?? 0;
    unacked += state?.messages ?? 0;
  }
  return { stored, unacked };
}

/**
 * After the load: every transfer settled (bounded wait), the legs streams empty, the legs on the
 * bus only where the configuration puts them, then the cross-database checker. What failed, if anything.
 */
async function verify(c: LegsConfig, pools: Record<string, pg.Pool>, bus: Bus, storedBefore: number): Promise<string[]> {
  const failures: string[] = [];
  const t0 = performance.now();
  const left = (await Promise.all(Object.values(pools).map((db) => settle(db, 'transfers', IN_FLIGHT, settings.settleTimeoutMs, [])))).reduce((a, b) => a + b, 0);
  const settledMs = Math.round(performance.now() - t0);
  console.log(left === 0 ? `every transfer settled ${settledMs} ms after the load` : `NOT settled: ${left} transfers still in flight ${settledMs} ms after the load`);
  if (left > 0) failures.push(`${left} transfers never settled`);

  const regions = Object.keys(pools);
  const deadline = Date.now() + settings.streamDrainMs;
  let legs = await legsOnBus(bus, regions);
  while (legs.unacked > 0 && Date.now() < deadline) {
    await sleep(100);
    legs = await legsOnBus(bus, regions);
  }
  const stored = legs.stored - storedBefore;
  console.log(`legs streams: ${stored} messages (credits and outcomes) stored during the run, ${legs.unacked} not acked`);
  if (c.env.LEGS_TRANSPORT === 'bus' && stored === 0) failures.push('no leg went through the bus');
  if (c.env.LEGS_TRANSPORT === 'http' && stored > 0) failures.push('legs went through the bus with LEGS_TRANSPORT=http');
  if (legs.unacked > 0) failures.push(`${legs.unacked} legs still in the streams ${settings.streamDrainMs} ms after every transfer settled`);

  const result = await checkRegions(pools, { settleTimeoutMs: settings.settleTimeoutMs });
  console.log(formatResult(result));
  if (!result.ok) failures.push('ledger checker failed');
  return failures;
}

async function startLegsCluster(c: LegsConfig, natsUrl: string): Promise<RunningCluster> {
  const opts = defaultOptions();
  // A database per region, whatever DATABASE_URL says: each configuration on fresh ones.
  opts.databaseUrl = '';
  opts.adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  // One nats-server: one replica, whatever NATS_REPLICAS says.
  opts.env = { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', NATS_URLS: natsUrl, NATS_REPLICAS: '1', ...c.env };
  const r = await startLocalCluster(opts);
  try {
    await waitFor('every shard to have an owner', settings.startTimeoutMs, async () => {
      const map = await clusterMap(r.cluster.nodes[0]!.url, r.adminKey);
      return map && map.shards.length > 0 && map.shards.every((s) => s.owner) ? map : undefined;
    }, 200);
  } catch (err) {
    await r.shutdown();
    throw err;
  }
  return r;
}

/** One configuration: its cluster started, set up, loaded, verified and stopped. */
async function runConfig(c: LegsConfig, bus: Bus, natsUrl: string, durationS: number, started: Started): Promise<ConfigResult> {
  const run = `legs${c.name.replace('-', '')}${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  const envText = Object.entries(c.env).map(([k, v]) => `${k}=${v}`).join(' ');
  console.log(`\n== ${c.name}: ${envText} (${c.about})`);
  const t0 = Date.now();
  const r = await startLegsCluster(c, natsUrl);
  started.cluster = r;
  const failures: string[] = [];
  let finished = false;
  let clients: LoadClient[] = [];
  let pools: Record<string, pg.Pool> = {};
  try {
    const nodes = r.cluster.nodes;
    for (const n of nodes) {
      void n.exited.then((code) => {
        // A Ctrl-C stopping the nodes is ours, not news.
        if (finished || isInterrupted() || code === null) return;
        failures.push(`node ${n.nodeId} exited during the run (code ${String(code)})`);
        console.error(`node ${n.nodeId} exited during the bench (code ${String(code)}):\n${n.output()}`);
      });
    }
    console.log(`cluster: ${nodes.length} nodes (${r.cluster.regions.map((g) => `${g} x${r.cluster.live(g).length}`).join(', ')}), ` +
      `databases ${describeDatabases(r)}, NATS_URLS ${natsUrl}; started in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    // One keep-alive pool per node, as many connections as clients on it.
    const perNode = Math.ceil(settings.clients / nodes.length);
    clients = nodes.map((n) => new LoadClient({ url: n.url, connections: perNode, timeoutMs: settings.requestTimeoutMs, retries: 0, log: undefined, run, engine: 'geopay' }));
    pools = regionPools(r);
    const s = await setupAccounts(r, clients, run);
    console.log(`setup: ${settings.accountsPerRegion} accounts per region opened and funded in ${s.seconds.toFixed(1)} s`);
    const storedBefore = (await legsOnBus(bus, r.cluster.regions)).stored;
    const phases = await runWorkloads(clients, s, durationS);
    failures.push(...(await verify(c, pools, bus, storedBefore)));
    for (const p of Object.values(phases)) if (p.counts.ok === 0) failures.push(`${p.workload}: no transfer completed`);
    for (const f of failures) console.log(`  ${f}`);
    console.log(`${c.name}: ${failures.length === 0 ? 'PASS' : 'FAIL'}`);
    return { config: c, phases, failures };
  } finally {
    finished = true;
    await Promise.all(clients.map((x) => x.destroy()));
    await Promise.all(Object.values(pools).map((p) => p.end()));
    await r.shutdown();
    delete started.cluster;
  }
}

interface WebhookFigures {
  code: number | null;
  /** bench:webhooks' deliveries line, and its figure; undefined when it printed none. */
  line: string | undefined;
  perS: number | undefined;
}

const WEBHOOKS_BENCH = fileURLToPath(new URL('./webhooks.ts', import.meta.url));

/**
 * bench/webhooks.ts is a program (it runs on import and exports nothing), so it runs as a child
 * with the same BENCH_SECONDS; its output is printed indented once it ends, and its deliveries line read.
 */
async function runWebhooksBench(durationS: number, started: Started): Promise<WebhookFigures> {
  console.log(`\n== webhooks: node --import tsx bench/webhooks.ts with BENCH_SECONDS=${durationS}`);
  const child = spawn(process.execPath, ['--import', 'tsx', WEBHOOKS_BENCH], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { ...process.env, BENCH_SECONDS: String(durationS) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => { out += chunk; });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  // Its own runMain stops its server and drops its database on SIGTERM.
  started.webhooks = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  const code = await exited;
  delete started.webhooks;
  console.log(out.trimEnd().split('\n').map((l) => `  | ${l}`).join('\n'));
  const line = /^webhook deliveries: .*$/m.exec(out)?.[0];
  const perS = line === undefined ? undefined : Number(/, (\d+)\/s over /.exec(line)?.[1]);
  return { code, line, perS: Number.isFinite(perS) ? perS : undefined };
}

/** Per workload, a row per configuration, with bus over http measured in this run. */
function printComparison(results: ConfigResult[], durationS: number): void {
  const http = results.find((x) => x.config.name === 'http');
  const rows = WORKLOADS.flatMap((w) => results.map((x, i) => {
    const p = x.phases[w];
    const c = p.counts;
    const base = x === http ? undefined : http?.phases[w];
    return [
      i === 0 ? w : '', x.config.name, fixed(p.throughputPerS, 0), fixed(p.latency.p50Ms, 1), fixed(p.latency.p99Ms, 1),
      fixed((100 * c.settled) / c.ok, 1), String(c.accepted), String(sumValues(c.rejected) + sumValues(c.errors)),
      base ? fixed(rateRatio(p, base), 2) : '-', base ? fixed(p.latency.p99Ms / base.latency.p99Ms, 2) : '-',
    ];
  }));
  console.log(`\nlegs: http vs bus vs bus-all, ${settings.clients} clients, ${durationS} s per workload, same run`);
  console.log(formatTable(['workload', 'legs', 'transfers/s', 'p50 ms', 'p99 ms', '201 %', '202', 'not ok', '/s vs http', 'p99 vs http'], rows, { labelColumns: 2 }));
  console.log('(201 %: answered settled within the request; 202: answered while the credit was in flight; not ok: rejections and errors)');
}

async function main(durationS: number): Promise<number> {
  const started: Started = {};
  const offInterrupt = onInterrupt(() => stopStarted(started));
  try {
    started.nats = await startNatsServers(1, { namePrefix: 'geopay-bench-legs' });
    const natsUrl = started.nats.urls[0]!;
    started.bus = await connectBus({ urls: [natsUrl], name: 'bench-legs', logger: pino({ level: 'silent' }) });
    console.log(`geopay bench:legs: nats-server ${natsUrl} (JetStream, one server for the three clusters); ` +
      `${settings.clients} clients, warm-up ${settings.warmupSeconds} s, measure ${durationS} s per workload; ${settings.accountsPerRegion} accounts per region`);
    const results: ConfigResult[] = [];
    for (const c of CONFIGS) results.push(await runConfig(c, started.bus, natsUrl, durationS, started));
    await started.bus.close();
    delete started.bus;
    await started.nats.stopAll();
    delete started.nats;

    const hooks = await runWebhooksBench(durationS, started);
    printComparison(results, durationS);
    console.log(`webhook deliveries to a local receiver: ${hooks.perS === undefined ? 'no figure' : `${hooks.perS}/s`} ` +
      '(bench:webhooks: its own single server on the local PostgreSQL, one endpoint, 32 clients; its output above)');
    const failures = results.flatMap((x) => x.failures.map((f) => `${x.config.name}: ${f}`));
    if (hooks.code !== 0) failures.push(`bench:webhooks exited with ${String(hooks.code)}`);
    if (hooks.line === undefined) failures.push('bench:webhooks printed no deliveries line');
    for (const f of failures) console.log(`  ${f}`);
    console.log(failures.length === 0 ? 'bench:legs: PASS' : 'bench:legs: FAIL');
    return failures.length === 0 ? 0 : 1;
  } finally {
    await stopStarted(started);
    offInterrupt();
  }
}

runBench(USAGE, 12, main);
