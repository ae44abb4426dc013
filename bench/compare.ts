// `npm run bench:compare`: geopay against the row-locking baseline in one invocation. Each
// engine gets a fresh database and server (ENGINE=geopay, then ENGINE=baseline), the same
// seeded workloads (uniform, and hot: 90% of transfers credit one merchant account) and the
// HTTP ceiling (GET /healthz, same server and client); the ledger is checked after each.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isMain, runMain, withOptions } from './lib/main.ts';
import {
  describeLoad, parseMix, parseNonNegative, parsePositive, parsePositiveInt, parseSeed, UsageError, type LoadShape, type Mix, type WorkloadSpec,
} from './lib/options.ts';
import { ceilingPhase, workloadPhase } from './lib/phases.ts';
import { progress, type Progress } from './lib/progress.ts';
import { describeWritten, environment, writeReport, type CheckReport, type ComparisonRow, type PhaseReport, type RunReport } from './lib/report.ts';
import { RequestLog } from './lib/request-log.ts';
import { checkTarget, withSession } from './lib/session.ts';
import { setup } from './lib/setup.ts';
import { phaseSummary } from './lib/summary.ts';
import { fixed, formatTable, stamp } from './lib/table.ts';
import { startTarget, type Engine } from './lib/target.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

const USAGE = `usage: npm run bench:compare -- [options]
  --duration S          measured seconds per workload (default 15)
  --warmup S            unmeasured seconds before each workload (default 2)
  --ceiling-duration S  measured seconds of the HTTP ceiling (default 10)
  --concurrency C       closed loop with C clients (default 64)
  --rate R              open loop at R requests/s instead
  --accounts N          customer accounts per engine (default 10000)
  --mix M               operation mix of both workloads (default transfer=100)
  --engines LIST        default geopay,baseline (baseline only when the engine exists)
  --seed N              workload seed, the same for both engines (default random)
  --out DIR             default reports/compare-<timestamp>
  --no-png              skip the PNG rendering
`;

/** The baseline is another team's work in progress: run it only once its code and setting exist. */
function baselineMissing(): string | undefined {
  if (!existsSync(join(root, 'src/baseline/routes.ts'))) return 'src/baseline/routes.ts does not exist yet';
  const settings = readFileSync(join(root, 'config/settings.ts'), 'utf8');
  if (!/env:\s*'ENGINE'/.test(settings)) return "config/settings.ts has no ENGINE setting yet (the server would ignore ENGINE=baseline and run geopay)";
  return undefined;
}

interface EngineRun {
  engine: string;
  phases: PhaseReport[];
  check: CheckReport | undefined;
}

const ratio = (a: number | undefined, b: number | undefined): number | null =>
  a === undefined || b === undefined || !(b > 0) ? null : a / b;

export function comparisonRows(runs: EngineRun[], workloads: string[]): ComparisonRow[] {
  const phase = (engine: string, w: string): PhaseReport | undefined => runs.find((r) => r.engine === engine)?.phases.find((p) => p.workload === w);
  return workloads.map((w) => {
    const g = phase('geopay', w);
    const b = phase('baseline', w);
    const ofCeiling: Record<string, number | null> = {};
    for (const r of runs) ofCeiling[r.engine] = ratio(phase(r.engine, w)?.throughputPerS, phase(r.engine, 'ceiling')?.throughputPerS);
    return {
      workload: w,
      throughputRatio: ratio(g?.throughputPerS, b?.throughputPerS),
      p50Ratio: ratio(g?.latency.p50Ms, b?.latency.p50Ms),
      p99Ratio: ratio(g?.latency.p99Ms, b?.latency.p99Ms),
      ofCeiling,
    };
  });
}

function ratioTable(runs: EngineRun[], rows: ComparisonRow[]): string {
  const engines = runs.map((r) => r.engine);
  const x = (v: number | null): string => (v === null ? '-' : `${v.toFixed(2)}x`);
  const pct = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : `${(100 * v).toFixed(0)}%`);
  const val = (e: string, w: string, f: (p: PhaseReport) => number, d: number): string => {
    const p = runs.find((r) => r.engine === e)?.phases.find((q) => q.workload === w);
    return p ? fixed(f(p), d) : '-';
  };
  const header = ['workload'];
  for (const e of engines) header.push(`${e} ok/s`);
  header.push('ok/s ratio');
  for (const e of engines) header.push(`${e} p50`);
  header.push('p50 ratio');
  for (const e of engines) header.push(`${e} p99`);
  header.push('p99 ratio');
  for (const e of engines) header.push(`${e} of ceiling`);
  const body = rows.map((r) => [
    r.workload,
    ...engines.map((e) => val(e, r.workload, (p) => p.throughputPerS, 0)), x(r.throughputRatio),
    ...engines.map((e) => val(e, r.workload, (p) => p.latency.p50Ms, 2)), x(r.p50Ratio),
    ...engines.map((e) => val(e, r.workload, (p) => p.latency.p99Ms, 2)), x(r.p99Ratio),
    ...engines.map((e) => pct(r.ofCeiling[e])),
  ]);
  body.push(['ceiling', ...engines.map((e) => val(e, 'ceiling', (p) => p.throughputPerS, 0)), '', ...engines.map((e) => val(e, 'ceiling', (p) => p.latency.p50Ms, 2)), '',
    ...engines.map((e) => val(e, 'ceiling', (p) => p.latency.p99Ms, 2)), '', ...engines.map(() => '')]);
  return `${formatTable(header, body)}\n(ratios are geopay / baseline; latencies in ms; "of ceiling" = ok/s over that server's GET /healthz rate)`;
}

interface CompareOptions {
  durationS: number;
  warmupS: number;
  ceilingS: number;
  load: LoadShape;
  accounts: number;
  mix: Mix;
  /** As given, for the report. */
  mixText: string;
  engines: Engine[];
  seed: number;
  out: string;
  png: boolean;
}

export function parseCompareArgs(argv: string[]): CompareOptions | 'help' {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        duration: { type: 'string', default: '15' }, warmup: { type: 'string', default: '2' }, 'ceiling-duration': { type: 'string', default: '10' },
        concurrency: { type: 'string' }, rate: { type: 'string' }, accounts: { type: 'string', default: '10000' },
        mix: { type: 'string', default: 'transfer=100' }, engines: { type: 'string', default: 'geopay,baseline' }, seed: { type: 'string' },
        out: { type: 'string' }, 'no-png': { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (v.help) return 'help';
  if (v.rate !== undefined && v.concurrency !== undefined) throw new UsageError('--rate and --concurrency exclude each other');
  const engines = v.engines.split(',');
  for (const e of engines) if (e !== 'geopay' && e !== 'baseline') throw new UsageError(`unknown engine "${e}"`);
  return {
    durationS: parsePositive(v.duration, '--duration'),
    warmupS: parseNonNegative(v.warmup, '--warmup'),
    ceilingS: parsePositive(v['ceiling-duration'], '--ceiling-duration'),
    load: v.rate !== undefined
      ? { mode: 'open', rate: parsePositive(v.rate, '--rate'), spike: undefined }
      : { mode: 'closed', concurrency: parsePositiveInt(v.concurrency ?? '64', '--concurrency') },
    accounts: parsePositiveInt(v.accounts, '--accounts'),
    mix: parseMix(v.mix),
    mixText: v.mix,
    engines: engines as Engine[],
    seed: parseSeed(v.seed),
    out: resolve(v.out ?? join('reports', `compare-${stamp()}`)),
    png: !v['no-png'],
  };
}

/** One engine: a fresh database and server, both workloads and the ceiling, then its checker. */
async function runEngine(engine: Engine, o: CompareOptions, ui: Progress, remarks: string[]): Promise<EngineRun & { failed: boolean }> {
  const run = `cmp${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  const connections = o.load.mode === 'closed' ? o.load.concurrency : 64;
  const spec = (skew: WorkloadSpec['skew']): WorkloadSpec => ({
    accounts: o.accounts, currencies: ['USD'], mix: o.mix, skew, maxAmount: 5000, fundingMinor: 1_000_000n, overdraftMinor: 0n,
  });
  // One log per engine, so each engine's ledger is held against its own requests.
  const log = new RequestLog(join(o.out, `requests-${engine}.ndjson`));
  const er = { engine, phases: [] as PhaseReport[], check: undefined as CheckReport | undefined, failed: false };
  return withSession({
    target: () => startTarget({ start: 'postgres', engine, keepDb: false, serverEnv: {} }),
    client: { connections, timeoutMs: 5_000, retries: 3, run },
    log,
    onServerExit: (message, output) => {
      remarks.push(`${engine}: ${message}`);
      ui.note(`${engine}: ${message}\n${output}`);
    },
    onError: (err, serverOutput) => {
      const msg = `${engine}: ${(err as Error).message}`;
      remarks.push(msg);
      ui.note(msg);
      if (serverOutput !== undefined) ui.note(`--- server output tail ---\n${serverOutput}`);
      return { ...er, failed: true };
    },
  }, async ({ target, client, endLoad }) => {
    ui.note(`\n${engine}: server ${target.url}, ${target.describe}`);
    // Both workloads share one setup: the hot one only adds the merchant as destination.
    const s = await setup(client, { adminKey: target.adminKey, run, spec: spec({ kind: 'uniform' }), concurrency: 64, liftRateLimits: true });
    ui.note(`${engine}: setup ${o.accounts} accounts in ${s.seconds.toFixed(1)} s`);
    const common = { client, engine, load: o.load, durationS: o.durationS, warmupS: o.warmupS, maxInFlight: 20_000, progress: ui };
    er.phases.push(await workloadPhase({ ...common, name: 'uniform', run, spec: spec({ kind: 'uniform' }), setup: s, seed: o.seed }));
    er.phases.push(await workloadPhase({ ...common, name: 'hot', run, spec: spec({ kind: 'hot', fraction: 0.9 }), setup: s, seed: o.seed + 1 }));
    // The ceiling is always a closed loop: it measures capacity, there is no latency target.
    er.phases.push(await ceilingPhase({ ...common, load: { mode: 'closed', concurrency: connections }, durationS: o.ceilingS, warmupS: 1 }));
    await endLoad();
    ui.note(phaseSummary(er.phases));
    er.check = await checkTarget(target, log.path, 30_000);
    return { ...er, failed: er.check !== undefined && !er.check.ok };
  });
}

function compareReport(o: CompareOptions, argv: string[], runs: EngineRun[], rows: ComparisonRow[], remarks: string[], elapsedS: number): RunReport {
  return {
    kind: 'compare',
    title: `geopay vs baseline: ${describeLoad(o.load)}, ${o.durationS} s per workload`,
    createdAt: new Date().toISOString(),
    command: `npm run bench:compare -- ${argv.join(' ')}`.trim(),
    environment: environment(),
    settings: {
      engines: runs.map((r) => r.engine).join(','), load: describeLoad(o.load), durationS: o.durationS, warmupS: o.warmupS, ceilingDurationS: o.ceilingS,
      accounts: o.accounts, mix: o.mixText, hot: 'hot:0.9 (90% of transfers credit one merchant account)', seed: o.seed, elapsedS: Number(elapsedS.toFixed(1)),
      requestLogs: runs.map((r) => join(o.out, `requests-${r.engine}.ndjson`)).join(' '),
    },
    phases: runs.flatMap((r) => r.phases),
    checks: runs.flatMap((r) => (r.check ? [r.check] : [])),
    comparison: rows,
    remarks,
  };
}

async function runCompare(o: CompareOptions, argv: string[]): Promise<number> {
  const ui = progress();
  await mkdir(o.out, { recursive: true });
  const remarks: string[] = [];
  const engines: Engine[] = [];
  for (const e of o.engines) {
    const missing = e === 'baseline' ? baselineMissing() : undefined;
    if (missing) {
      remarks.push(`baseline not run: ${missing}`);
      ui.note(`baseline not run: ${missing}`);
    } else {
      engines.push(e);
    }
  }
  const t0 = performance.now();
  ui.note(`bench:compare: ${engines.join(' vs ')}; ${describeLoad(o.load)}; ${o.durationS} s per workload after ${o.warmupS} s warm-up; ${o.accounts} accounts; seed ${o.seed}`);

  const runs: EngineRun[] = [];
  let failed = false;
  for (const engine of engines) {
    const r = await runEngine(engine, o, ui, remarks);
    runs.push(r);
    failed ||= r.failed;
  }

  const rows = comparisonRows(runs, ['uniform', 'hot']);
  ui.note(`\n${ratioTable(runs, rows)}`);
  const elapsedS = (performance.now() - t0) / 1000;
  ui.note(`\ncompare finished in ${elapsedS.toFixed(0)} s`);
  const written = await writeReport(o.out, compareReport(o, argv, runs, rows, remarks, elapsedS), { png: o.png });
  ui.note(describeWritten(written));
  return failed ? 1 : 0;
}

if (isMain(import.meta.url)) {
  const argv = process.argv.slice(2);
  runMain(() => withOptions(USAGE, () => parseCompareArgs(argv), (o) => runCompare(o, argv)));
}
