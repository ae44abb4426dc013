// `npm run loadtest -- [options]`: drives a geopay (or baseline) server with a seeded payment
// workload, open loop at a rate (with an optional spike) or closed loop with C clients, logs
// every request, then checks the ledger against the log and writes JSON, HTML and PNG reports.
// Exit code: 0 pass, 1 ledger check failed (or nothing succeeded), 2 bad usage or setup failure.
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isMain, runMain, withOptions } from './lib/main.ts';
import {
  describeLoad, describeMix, describeSkew, parseCurrencies, parseMinor, parseMix, parseNonNegative, parsePositive, parsePositiveInt,
  parseSeed, parseSkew, parseSpike, UsageError, type LoadShape, type WorkloadSpec,
} from './lib/options.ts';
import { workloadPhase } from './lib/phases.ts';
import { progress, type Progress } from './lib/progress.ts';
import { describeWritten, environment, writeReport, type PhaseReport, type RunReport } from './lib/report.ts';
import { RequestLog } from './lib/request-log.ts';
import { checkTarget, startClusterTarget, withSession } from './lib/session.ts';
import { setup, type SetupResult } from './lib/setup.ts';
import { sumValues } from './lib/stats.ts';
import { phaseSummary } from './lib/summary.ts';
import { stamp } from './lib/table.ts';
import { remoteTarget, startTarget, type Engine, type StartMode, type Target } from './lib/target.ts';

const USAGE = `usage: npm run loadtest -- [options]

target (one of):
  --start postgres|embedded   start a server: on a fresh database of the local PostgreSQL
                              (default; dropped at the end unless --keep-db), or on PGlite
  --start cluster             start the local cluster of \`npm run cluster\` (geopay, a fresh
                              database per region, dropped at the end; checked across them)
  --url URL --admin-key KEY   a running server; add --database-url URL to check its ledger
  --engine geopay|baseline    ENGINE of the started server (default geopay)
  --server-env K=V            extra environment for the started server (repeatable)
  --keep-db                   keep the started server's database

workload:
  --accounts N                customer accounts to open and fund (default 1000)
  --currencies USD,EUR        currencies, accounts round-robin (default USD)
  --mix transfer=80,deposit=10,withdraw=10
  --skew uniform|zipf:1.1|hot:0.9   hot:F = fraction F of transfers credit one merchant account
  --max-amount N              amounts are uniform in 1..N minor units (default 5000)
  --funding N                 deposited into each account at setup (default 1000000)
  --overdraft N               overdraftLimit of each account (default 0)
  --seed N                    seed of every random choice (default: random, printed)

load (one of):
  --rate R                    open loop, R requests/s on a fixed schedule (default 200)
  --spike 10x@10s+5s          with --rate: 10x the rate from second 10, for 5 s
  --concurrency C             closed loop, C clients
  --duration S                measured seconds (default 30)
  --warmup S                  unmeasured seconds first (default 0)

client:
  --connections N             keep-alive connections (default 64; closed loop: C)
  --timeout-ms N              per attempt (default 5000); a timeout or 503 is retried
  --retries N                 retries with the same key and body (default 3)
  --max-inflight N            open loop: requests outstanding at most (default 20000)
  --keep-rate-limits          leave the tenant's rate limits as they are (default: lift
                              them to 1000000/s, so the limiter is not what is measured)

output:
  --out DIR                   default reports/<timestamp>
  --name NAME                 workload label in the report (default: the skew)
  --settle-ms N               wait for transfers in flight before checking (default 30000)
  --no-png                    skip the PNG rendering
`;

type Parsed = {
  target: { kind: 'start'; start: StartMode; engine: Engine; keepDb: boolean; serverEnv: Record<string, string> }
    | { kind: 'url'; url: string; adminKey: string; databaseUrl: string | undefined; engine: string };
  spec: WorkloadSpec;
  load: LoadShape;
  durationS: number;
  warmupS: number;
  seed: number;
  out: string;
  name: string;
  connections: number;
  timeoutMs: number;
  retries: number;
  maxInFlight: number;
  settleMs: number;
  png: boolean;
  liftRateLimits: boolean;
};

function readFlags(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      options: {
        url: { type: 'string' }, 'admin-key': { type: 'string' }, 'database-url': { type: 'string' },
        start: { type: 'string' }, engine: { type: 'string', default: 'geopay' }, 'keep-db': { type: 'boolean', default: false },
        'server-env': { type: 'string', multiple: true, default: [] },
        accounts: { type: 'string', default: '1000' }, currencies: { type: 'string', default: 'USD' },
        mix: { type: 'string', default: 'transfer=80,deposit=10,withdraw=10' }, skew: { type: 'string', default: 'uniform' },
        'max-amount': { type: 'string', default: '5000' }, funding: { type: 'string', default: '1000000' }, overdraft: { type: 'string', default: '0' },
        seed: { type: 'string' }, rate: { type: 'string' }, spike: { type: 'string' }, concurrency: { type: 'string' },
        duration: { type: 'string', default: '30' }, warmup: { type: 'string', default: '0' },
        connections: { type: 'string' }, 'timeout-ms': { type: 'string', default: '5000' }, retries: { type: 'string', default: '3' },
        'max-inflight': { type: 'string', default: '20000' }, out: { type: 'string' }, name: { type: 'string' },
        'settle-ms': { type: 'string', default: '30000' }, 'no-png': { type: 'boolean', default: false },
        'keep-rate-limits': { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

type Flags = ReturnType<typeof readFlags>;

function parseTarget(v: Flags): Parsed['target'] {
  if (v.url !== undefined) {
    if (v.start !== undefined) throw new UsageError('--url and --start exclude each other');
    if (!v['admin-key']) throw new UsageError('--url needs --admin-key (the setup creates a tenant)');
    return { kind: 'url', url: v.url, adminKey: v['admin-key'], databaseUrl: v['database-url'], engine: v.engine };
  }
  const start = v.start ?? 'postgres';
  if (start !== 'postgres' && start !== 'embedded' && start !== 'cluster') throw new UsageError(`--start is postgres, embedded or cluster, got "${start}"`);
  if (v.engine !== 'geopay' && v.engine !== 'baseline') throw new UsageError(`--engine is geopay or baseline, got "${v.engine}"`);
  if (start === 'cluster' && v.engine !== 'geopay') throw new UsageError('--start cluster runs geopay only (its checker reads geopay\'s tables in every region)');
  if (v['database-url']) throw new UsageError('--database-url is for --url mode; a started server\'s database is known');
  const serverEnv: Record<string, string> = {};
  for (const kv of v['server-env']) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new UsageError(`--server-env takes NAME=value, got "${kv}"`);
    serverEnv[m[1]!] = m[2]!;
  }
  return { kind: 'start', start, engine: v.engine, keepDb: v['keep-db'], serverEnv };
}

function parseLoad(v: Flags): LoadShape {
  if (v.rate !== undefined && v.concurrency !== undefined) throw new UsageError('--rate (open loop) and --concurrency (closed loop) exclude each other');
  if (v.spike !== undefined && v.concurrency !== undefined) throw new UsageError('--spike needs --rate (open loop)');
  return v.concurrency !== undefined
    ? { mode: 'closed', concurrency: parsePositiveInt(v.concurrency, '--concurrency') }
    : { mode: 'open', rate: parsePositive(v.rate ?? '200', '--rate'), spike: v.spike ? parseSpike(v.spike) : undefined };
}

export function parseLoadtestArgs(argv: string[]): Parsed | 'help' {
  const v = readFlags(argv);
  if (v.help) return 'help';
  const target = parseTarget(v);
  const spec: WorkloadSpec = {
    accounts: parsePositiveInt(v.accounts, '--accounts'),
    currencies: parseCurrencies(v.currencies),
    mix: parseMix(v.mix),
    skew: parseSkew(v.skew),
    maxAmount: parsePositiveInt(v['max-amount'], '--max-amount'),
    fundingMinor: parseMinor(v.funding, '--funding'),
    overdraftMinor: parseMinor(v.overdraft, '--overdraft'),
  };
  if (spec.accounts < 2 * spec.currencies.length) throw new UsageError('--accounts must give each currency at least 2 accounts');
  const load = parseLoad(v);
  return {
    target, spec, load,
    seed: parseSeed(v.seed),
    warmupS: parseNonNegative(v.warmup, '--warmup'),
    durationS: parsePositive(v.duration, '--duration'),
    out: resolve(v.out ?? join('reports', stamp())),
    name: v.name ?? describeSkew(spec.skew),
    connections: v.connections !== undefined ? parsePositiveInt(v.connections, '--connections') : load.mode === 'closed' ? load.concurrency : 64,
    timeoutMs: parsePositiveInt(v['timeout-ms'], '--timeout-ms'),
    retries: v.retries === '0' ? 0 : parsePositiveInt(v.retries, '--retries'),
    maxInFlight: parsePositiveInt(v['max-inflight'], '--max-inflight'),
    settleMs: v['settle-ms'] === '0' ? 0 : parsePositiveInt(v['settle-ms'], '--settle-ms'),
    png: !v['no-png'],
    liftRateLimits: !v['keep-rate-limits'],
  };
}

function startOrName(t: Parsed['target']): Promise<Target> {
  if (t.kind === 'url') return Promise.resolve(remoteTarget(t.url, t.adminKey, t.databaseUrl, t.engine));
  // The cluster's target knows every region's database, for the cross-database checker.
  if (t.start === 'cluster') return startClusterTarget(t.serverEnv);
  return startTarget({ start: t.start, engine: t.engine, keepDb: t.keepDb, serverEnv: t.serverEnv });
}

function announce(ui: Progress, o: Parsed, run: string, target: Target): void {
  ui.note(`loadtest ${run}: ${target.engine} at ${target.url}, ${target.describe}`);
  ui.note(`workload: ${o.spec.accounts} accounts in ${o.spec.currencies.join(',')}, mix ${describeMix(o.spec.mix)}, skew ${describeSkew(o.spec.skew)}, seed ${o.seed}`);
  ui.note(`load: ${describeLoad(o.load)}, ${o.durationS} s measured${o.warmupS ? ` after ${o.warmupS} s warm-up` : ''}`);
}

function runReport(o: Parsed, argv: string[], run: string, target: Target, s: SetupResult, log: RequestLog, phase: PhaseReport): RunReport {
  return {
    kind: 'loadtest',
    title: `geopay loadtest: ${target.engine}, ${o.name}, ${describeLoad(o.load)}`,
    createdAt: new Date().toISOString(),
    command: `npm run loadtest -- ${argv.join(' ')}`,
    environment: environment(),
    settings: {
      run, target: target.url, engine: target.engine, database: target.describe, seed: o.seed, accounts: o.spec.accounts,
      currencies: o.spec.currencies.join(','), mix: describeMix(o.spec.mix), skew: describeSkew(o.spec.skew), maxAmount: o.spec.maxAmount,
      funding: o.spec.fundingMinor.toString(), overdraft: o.spec.overdraftMinor.toString(), load: describeLoad(o.load),
      durationS: o.durationS, warmupS: o.warmupS, connections: o.connections, timeoutMs: o.timeoutMs, retries: o.retries,
      setupSeconds: Number(s.seconds.toFixed(2)), requestLog: log.path, requestLogLines: log.written,
    },
    phases: [phase],
    checks: [],
    remarks: [],
  };
}

async function runLoadtest(o: Parsed, argv: string[], ui: Progress): Promise<number> {
  const run = `lt${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  await mkdir(o.out, { recursive: true });
  const log = new RequestLog(join(o.out, 'requests.ndjson'));
  const remarks: string[] = [];
  return withSession({
    target: () => startOrName(o.target),
    client: { connections: o.connections, timeoutMs: o.timeoutMs, retries: o.retries, run },
    log,
    onServerExit: (message, output) => {
      remarks.push(message);
      ui.note(`${message}\n${output}`);
    },
    onError: (err, serverOutput) => {
      process.stderr.write(`loadtest failed: ${err instanceof Error ? err.message : String(err)}\n`);
      if (serverOutput !== undefined) process.stderr.write(`--- server output tail ---\n${serverOutput}\n`);
      return 2;
    },
  }, async ({ target, client, endLoad }) => {
    announce(ui, o, run, target);
    const s = await setup(client, {
      adminKey: target.adminKey, run, spec: o.spec, concurrency: Math.min(64, o.connections), liftRateLimits: o.liftRateLimits, onProgress: (m) => ui.note(`setup: ${m}`),
      ...('regionDatabases' in target ? { regions: Object.keys(target.regionDatabases as Record<string, string>) } : {}),
    });
    ui.note(`setup: ${o.spec.accounts} accounts and ${o.spec.currencies.length} merchant(s) ready in ${s.seconds.toFixed(1)} s`);
    const phase = await workloadPhase({
      client, engine: target.engine, load: o.load, durationS: o.durationS, warmupS: o.warmupS, maxInFlight: o.maxInFlight,
      progress: ui, name: o.name, run, spec: o.spec, setup: s, seed: o.seed,
    });
    await endLoad();
    ui.note(`\n${phaseSummary([phase])}`);
    if (phase.sendLag && phase.sendLag.p99Ms > 10) {
      remarks.push(`the client sent requests late (send lag p99 ${phase.sendLag.p99Ms} ms): it was itself a bottleneck, latencies include its delay`);
    }
    if (sumValues(phase.counts.errors) > 0) ui.note(`errors: ${Object.entries(phase.counts.errors).map(([k, n]) => `${k} ×${n}`).join(', ')}`);

    const checked = await checkTarget(target, log.path, o.settleMs);
    if (!checked) remarks.push('ledger not checked: no --database-url');
    const report = { ...runReport(o, argv, run, target, s, log, phase), checks: checked ? [checked] : [], remarks };
    ui.note(`${describeWritten(await writeReport(o.out, report, { png: o.png }))}\nrequests: ${log.path}`);
    if (phase.counts.ok === 0) {
      ui.note('FAIL: no request succeeded');
      return 1;
    }
    return checked && !checked.ok ? 1 : 0;
  });
}

export function loadtest(argv: string[]): Promise<number> {
  return withOptions(USAGE, () => parseLoadtestArgs(argv), (o) => runLoadtest(o, argv, progress()));
}

if (isMain(import.meta.url)) runMain(() => loadtest(process.argv.slice(2)));
