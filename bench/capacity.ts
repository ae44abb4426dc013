// The unit costs behind docs/capacity.md: a closed-loop uniform transfer load on a fresh
// server on the local PostgreSQL, and what each acknowledged transfer cost the server, the
// PostgreSQL processes and this client in CPU, in commit statements, WAL, rows and stored
// bytes; then what a balance read costs. With --cluster S, also the local cluster of `npm run
// cluster`: its Redis commands idle and per request, and how long a joining node takes its shards.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { SETTINGS } from '../config/settings.ts';
import { defaultOptions, startLocalCluster, type RunningCluster } from '../scripts/cluster.ts';
import { clusterMap, waitFor, type ClusterMap } from '../test/helpers/cluster.ts';
import { IN_FLIGHT, settle } from './checker.ts';
import { classify, LoadClient } from './lib/client.ts';
import type { Job } from './lib/drivers.ts';
import { onInterrupt, runMain, withOptions } from './lib/main.ts';
import { parsePositive, parsePositiveInt, UsageError } from './lib/options.ts';
import { anyTwo, measurePhase, pickFrom, transferJobs, type PhaseCommon } from './lib/phases.ts';
import { progress } from './lib/progress.ts';
import type { PhaseReport } from './lib/report.ts';
import { checkTarget, withFreshServer, type Session } from './lib/session.ts';
import { inParallel, setup, type SetupResult } from './lib/setup.ts';
import type { Outcome } from './lib/stats.ts';
import { transferSummary } from './lib/summary.ts';
import { fixed, formatTable } from './lib/table.ts';
import { readExposition } from './lib/target.ts';

const USAGE = `usage: npm run bench:capacity -- [--duration S] [--clients N] [--cluster S]
  --duration S   measured seconds of the transfer load, and of the reads (default: BENCH_SECONDS, else 15)
  --clients N    closed-loop clients (default 64)
  --cluster S    also start the local cluster of \`npm run cluster\`: count its Redis commands
                 for S seconds idle and per /v1 request, then time a node joining (default: skipped)
Other variables (WRITER_LANES=8, ...) reach the servers it starts. WAL, WAL fsyncs and the
background processes' CPU are machine-wide: run it when the machine is otherwise quiet.
`;

// Read once: the bench has no config module of its own.
const settings = Object.freeze({
  warmupSeconds: 2,
  /** Closed-loop clients unless --clients says otherwise. */
  clients: 64,
  setupClients: 64,
  accounts: 10_000,
  /** Enough that no source runs dry at 100 minor units a transfer, so no run measures refusals. */
  fundingMinor: 1_000_000_000n,
  maxAmountMinor: 100,
  settleDeadlineMs: 60_000,
  /** Per attempt; no retries: a 503 or a timeout is a figure of the run, not something to hide. */
  requestTimeoutMs: 30_000,
  /**
   * PostgreSQL 15 backends flush their statistics (rows, commits, WAL counts) at most once a
   * second, and an idle one that was due only after 10 s idle (PGSTAT_IDLE_INTERVAL).
   */
  statsFlushMs: 11_000,
  gaugeEveryMs: 1_000,
  /** GETs sent through one cluster node to count the rate limiter's Redis calls. */
  redisProbeRequests: 1_000,
  /** Waiting for a cold local cluster to place and take every shard. */
  placementDeadlineMs: 120_000,
  /** The nodes' settings: theirs by default (the variables reach the nodes through the environment). */
  leaseTtlMs: Number(process.env.LEASE_TTL_MS || SETTINGS.leaseTtlMs.default),
  heartbeatMs: Number(process.env.HEARTBEAT_MS || SETTINGS.heartbeatMs.default),
});

interface CapacityOptions { durationS: number; clients: number; clusterS: number | undefined }
type LoadSpec = Pick<CapacityOptions, 'durationS' | 'clients'>;

function parseOptions(argv: string[], fromEnv: string | undefined): CapacityOptions | 'help' {
  let v;
  try {
    v = parseArgs({ args: argv, options: { duration: { type: 'string' }, clients: { type: 'string' }, cluster: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (v.help) return 'help';
  const raw = v.duration ?? (fromEnv === '' ? undefined : fromEnv);
  return {
    durationS: raw === undefined ? 15 : parsePositive(raw, v.duration !== undefined ? '--duration' : 'BENCH_SECONDS'),
    clients: v.clients === undefined ? settings.clients : parsePositiveInt(v.clients, '--clients'),
    clusterS: v.cluster === undefined ? undefined : parsePositive(v.cluster, '--cluster'),
  };
}

// --- CPU, from /proc and the server's own process metrics ---

/** Kernel ticks per second, for /proc's utime and stime. */
const TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
const ticksToMs = (ticks: number): number => (ticks * 1000) / TICKS_PER_S;

/** CPU ms (user + system) of every process named `postgres`, by pid. */
async function postgresCpuMs(): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    // A process may exit between the listing and the read.
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue;
    const close = stat.lastIndexOf(')');
    if (stat.slice(stat.indexOf('(') + 1, close) !== 'postgres') continue;
    // Fields after "(comm) ": state is field 3, utime 14 and stime 15.
    const fields = stat.slice(close + 2).split(' ');
    out.set(Number(entry), ticksToMs(Number(fields[11]) + Number(fields[12])));
  }
  return out;
}

/** The machine's CPU time, busy and all, in ms summed over cores (/proc/stat). */
async function machineCpuMs(): Promise<{ busyMs: number; totalMs: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
  // idle and iowait are the two ways of not working.
  return { busyMs: ticksToMs(total - ticks[3]! - ticks[4]!), totalMs: ticksToMs(total) };
}

interface CpuReading {
  atMs: number;
  serverCpuMs: number;
  postgres: Map<number, number>;
  machine: { busyMs: number; totalMs: number };
  clientCpuMs: number;
}

async function readCpu(url: string): Promise<CpuReading> {
  const metric = await readExposition(url);
  const client = process.cpuUsage();
  return {
    atMs: performance.now(),
    serverCpuMs: metric('process_cpu_seconds_total') * 1000,
    postgres: await postgresCpuMs(),
    machine: await machineCpuMs(),
    clientCpuMs: (client.user + client.system) / 1000,
  };
}

// --- The server's counters and PostgreSQL's statistics ---

/** Server metrics read around the run: full name, and a label the samples must carry. */
const SERVER_FIGURES = {
  statements: ['geopay_commit_statements_total'],
  writeSets: ['geopay_actor_batches_committed_total'],
  writeSetsPerStatementSum: ['geopay_commit_write_sets_sum'],
  writeSetsPerStatementCount: ['geopay_commit_write_sets_count'],
  commitSecondsSum: ['geopay_commit_duration_seconds_sum'],
  commitSecondsCount: ['geopay_commit_duration_seconds_count'],
  batchCommandsSum: ['geopay_actor_batch_commands_sum'],
  batchCommandsCount: ['geopay_actor_batch_commands_count'],
  transfers: ['geopay_transfers_total', 'kind="transfer"'],
} as const satisfies Record<string, readonly [string, string?]>;
type ServerFigures = Record<keyof typeof SERVER_FIGURES, number>;

async function readServer(url: string): Promise<ServerFigures> {
  const metric = await readExposition(url);
  const out = {} as ServerFigures;
  for (const [k, [name, having]] of Object.entries(SERVER_FIGURES) as [keyof ServerFigures, readonly [string, string?]][]) {
    // A labelled counter has no sample until its first increment: absent is zero.
    const v = metric(name, having);
    out[k] = Number.isNaN(v) ? 0 : v;
  }
  return out;
}

/** Table + index bytes (indexes alone in indexBytes) and rows written, of one table. */
interface TableFigures { bytes: number; indexBytes: number; inserted: number; updated: number; deleted: number }
const TABLE_FIGURES = ['bytes', 'indexBytes', 'inserted', 'updated', 'deleted'] as const;
const tableFigures = (f: (k: keyof TableFigures) => number): TableFigures =>
  ({ bytes: f('bytes'), indexBytes: f('indexBytes'), inserted: f('inserted'), updated: f('updated'), deleted: f('deleted') });
type Backend = 'bench' | 'other' | 'probe' | 'background';

/** PostgreSQL's cumulative statistics: read only after the backends flushed them (settings.statsFlushMs). */
interface PgFigures {
  walRecords: number;
  walFullPages: number;
  walSyncs: number;
  tables: Map<string, TableFigures>;
  commits: number;
  /** Commits of every other database, by name: the delta counts those present at both readings. */
  otherCommits: Map<string, number>;
}

async function readPg(sql: pg.Client): Promise<PgFigures> {
  const wal = (await sql.query('SELECT wal_records, wal_fpi, wal_sync FROM pg_stat_wal')).rows[0];
  const tables = new Map<string, TableFigures>();
  for (const r of (await sql.query(`SELECT relname, pg_total_relation_size(relid) AS bytes, pg_indexes_size(relid) AS index_bytes,
      n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables`)).rows) {
    tables.set(r.relname, {
      bytes: Number(r.bytes), indexBytes: Number(r.index_bytes), inserted: Number(r.n_tup_ins), updated: Number(r.n_tup_upd), deleted: Number(r.n_tup_del),
    });
  }
  let commits = 0;
  const otherCommits = new Map<string, number>();
  for (const r of (await sql.query('SELECT datname, datname = current_database() AS ours, xact_commit FROM pg_stat_database WHERE datname IS NOT NULL')).rows) {
    if (r.ours) commits = Number(r.xact_commit);
    else otherCommits.set(r.datname, Number(r.xact_commit));
  }
  return {
    walRecords: Number(wal.wal_records), walFullPages: Number(wal.wal_fpi), walSyncs: Number(wal.wal_sync),
    tables, commits, otherCommits,
  };
}

/** Who each PostgreSQL process is, read beside its CPU: another database's short-lived backend must not pass for background. */
async function readBackends(sql: pg.Client): Promise<Map<number, Backend>> {
  const backends = new Map<number, Backend>();
  for (const r of (await sql.query('SELECT pid, pid = pg_backend_pid() AS probe, datname = current_database() AS ours, datname IS NULL AS shared FROM pg_stat_activity')).rows) {
    backends.set(r.pid, r.probe ? 'probe' : r.ours ? 'bench' : r.shared ? 'background' : 'other');
  }
  return backends;
}

/** What is current at once: CPU (and whose), the server's counters, the WAL position. */
interface Instant { cpu: CpuReading; backends: Map<number, Backend>; server: ServerFigures; lsn: string }
interface Snapshot extends Instant { pg: PgFigures }

async function readInstant(url: string, sql: pg.Client): Promise<Instant> {
  const lsn = String((await sql.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn);
  const backends = await readBackends(sql);
  return { cpu: await readCpu(url), backends, server: await readServer(url), lsn };
}

/** The server's gauges once a second while the load runs: what ran short (pool, writer, event loop). */
interface GaugePeaks { samples: number; poolWaitingMax: number; poolWaitingMean: number; writerQueueMax: number; eventLoopLagP99MaxMs: number }

function sampleGauges(url: string): { stop(): Promise<GaugePeaks> } {
  const peaks: GaugePeaks = { samples: 0, poolWaitingMax: 0, poolWaitingMean: 0, writerQueueMax: 0, eventLoopLagP99MaxMs: 0 };
  let waitingSum = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      await sleep(settings.gaugeEveryMs);
      const metric = await readExposition(url).catch(() => undefined);
      if (!metric) continue;
      const waiting = metric('geopay_pg_pool_connections', 'state="waiting"');
      peaks.samples += 1;
      waitingSum += waiting;
      peaks.poolWaitingMax = Math.max(peaks.poolWaitingMax, waiting);
      peaks.writerQueueMax = Math.max(peaks.writerQueueMax, metric('geopay_writer_queue_length'));
      peaks.eventLoopLagP99MaxMs = Math.max(peaks.eventLoopLagP99MaxMs, metric('nodejs_eventloop_lag_p99_seconds') * 1000);
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return { ...peaks, poolWaitingMean: peaks.samples === 0 ? 0 : waitingSum / peaks.samples };
    },
  };
}

// --- The run ---

/** Closed-loop clients after a warm-up: the load of every phase here. */
const closedLoop = ({ durationS, clients }: LoadSpec): PhaseCommon => ({
  engine: 'geopay', load: { mode: 'closed', concurrency: clients }, durationS, warmupS: settings.warmupSeconds,
  maxInFlight: clients, progress: progress(),
});

interface Measured {
  report: PhaseReport;
  before: Snapshot;
  /** At the end of the load, before the credits still in flight settle: the CPU split of the load itself. */
  loadEnd: CpuReading;
  after: Snapshot;
  walBytes: number;
  gauges: GaugePeaks;
  inFlightLeft: number;
}

/**
 * Snapshots around the load. The CPU, the counters and the WAL position are read right
 * before it and once its credits in flight settled, so every leg of every acknowledged
 * transfer is in them and no idle wait is; PostgreSQL's statistics once they are flushed.
 */
async function measureRun(session: Session, s: SetupResult, sql: pg.Client, load: LoadSpec): Promise<Measured> {
  const url = session.target.url;
  await settle(sql, 'transfers', IN_FLIGHT, settings.settleDeadlineMs, []);
  await sleep(settings.statsFlushMs);
  const pgBefore = await readPg(sql);
  const before: Snapshot = { ...(await readInstant(url, sql)), pg: pgBefore };
  const gauges = sampleGauges(url);
  const jobs = transferJobs({
    clients: [session.client], tenantId: s.tenantId, tenantKey: s.tenantKey, currency: 'USD', maxAmountMinor: settings.maxAmountMinor,
    pickPair: anyTwo(s.accounts.byCurrency.get('USD')!),
  });
  const report = await measurePhase(closedLoop(load), 'uniform', jobs);
  const loadEnd = await readCpu(url);
  const peaks = await gauges.stop();
  const inFlightLeft = await settle(sql, 'transfers', IN_FLIGHT, settings.settleDeadlineMs, []);
  const instantAfter = await readInstant(url, sql);
  await sleep(settings.statsFlushMs);
  const after: Snapshot = { ...instantAfter, pg: await readPg(sql) };
  const walBytes = Number((await sql.query('SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8 AS d', [after.lsn, before.lsn])).rows[0].d);
  return { report, before, loadEnd, after, walBytes, gauges: peaks, inFlightLeft };
}

/**
 * PostgreSQL CPU between two readings: the bench database's backends, and the shared
 * background processes. A process pg_stat_activity does not list (the postmaster) counts as background.
 */
function postgresSplit(from: CpuReading, to: CpuReading, classes: Map<number, Backend>[]): { benchMs: number; backgroundMs: number } {
  const classOf = (pid: number): Backend => {
    for (const c of classes) if (c.has(pid)) return c.get(pid)!;
    return 'background';
  };
  let benchMs = 0;
  let backgroundMs = 0;
  for (const [pid, ms] of to.postgres) {
    const delta = ms - (from.postgres.get(pid) ?? 0);
    const c = classOf(pid);
    if (c === 'bench') benchMs += delta;
    else if (c === 'background') backgroundMs += delta;
  }
  return { benchMs, backgroundMs };
}

// --- What it prints ---

/** Every figure of the run, totals over the snapshot window; per transfer in the tables. */
interface Costs {
  transfers: number;
  serverCpuMs: number;
  pgBenchCpuMs: number;
  pgBackgroundCpuMs: number;
  clientCpuMs: number;
  statements: number;
  writeSets: number;
  transactions: number;
  walBytes: number;
  walRecords: number;
  walFullPages: number;
  walSyncs: number;
  /** Per table, and summed over every table. */
  tables: Map<string, TableFigures>;
  total: TableFigures;
}

function tableDeltas(m: Measured): Map<string, TableFigures> {
  const out = new Map<string, TableFigures>();
  for (const [name, t] of [...m.after.pg.tables].sort(([a], [b]) => a.localeCompare(b))) {
    const b = m.before.pg.tables.get(name);
    const d = tableFigures((k) => t[k] - (b?.[k] ?? 0));
    if (TABLE_FIGURES.some((k) => d[k] !== 0)) out.set(name, d);
  }
  return out;
}

function costsOf(m: Measured): Costs {
  const { before, after } = m;
  const server = (k: keyof ServerFigures): number => after.server[k] - before.server[k];
  const pgCpu = postgresSplit(before.cpu, after.cpu, [after.backends, before.backends]);
  const tables = tableDeltas(m);
  const sum = (f: (t: TableFigures) => number): number => [...tables.values()].reduce((a, t) => a + f(t), 0);
  return {
    transfers: server('transfers'),
    serverCpuMs: after.cpu.serverCpuMs - before.cpu.serverCpuMs,
    pgBenchCpuMs: pgCpu.benchMs,
    pgBackgroundCpuMs: pgCpu.backgroundMs,
    clientCpuMs: after.cpu.clientCpuMs - before.cpu.clientCpuMs,
    statements: server('statements'),
    writeSets: server('writeSets'),
    transactions: after.pg.commits - before.pg.commits,
    walBytes: m.walBytes,
    walRecords: after.pg.walRecords - before.pg.walRecords,
    walFullPages: after.pg.walFullPages - before.pg.walFullPages,
    walSyncs: after.pg.walSyncs - before.pg.walSyncs,
    tables,
    total: tableFigures((k) => sum((t) => t[k])),
  };
}

function figureRows(c: Costs, m: Measured): string[][] {
  const per = (figure: string, v: number, digits: number, source: string): string[] => [figure, fixed(v / c.transfers, digits), fixed(v, 0), source];
  const mean = (figure: string, sum: keyof ServerFigures, count: keyof ServerFigures, scale: number, source: string): string[] =>
    [figure, fixed((scale * (m.after.server[sum] - m.before.server[sum])) / (m.after.server[count] - m.before.server[count]), 2), '-', source];
  return [
    per('server CPU ms', c.serverCpuMs, 3, 'process_cpu_seconds_total (/metrics)'),
    per('PostgreSQL CPU ms, bench database backends', c.pgBenchCpuMs, 3, '/proc/<pid>/stat, pids from pg_stat_activity'),
    per('PostgreSQL CPU ms, background (machine-wide)', c.pgBackgroundCpuMs, 3, '/proc: WAL writer, checkpointer, bgwriter, postmaster'),
    per('client CPU ms', c.clientCpuMs, 3, 'process.cpuUsage() of this bench'),
    per('commit statements', c.statements, 3, 'geopay_commit_statements_total'),
    per('actor write sets', c.writeSets, 3, 'geopay_actor_batches_committed_total'),
    mean('write sets per commit statement (mean)', 'writeSetsPerStatementSum', 'writeSetsPerStatementCount', 1, 'geopay_commit_write_sets'),
    mean('commands per actor batch (mean)', 'batchCommandsSum', 'batchCommandsCount', 1, 'geopay_actor_batch_commands'),
    mean('commit statement ms (mean)', 'commitSecondsSum', 'commitSecondsCount', 1000, 'geopay_commit_duration_seconds'),
    per('PostgreSQL transactions, bench database', c.transactions, 3, 'pg_stat_database.xact_commit (with ~11 s idle polling)'),
    per('WAL bytes (machine-wide)', c.walBytes, 0, 'pg_wal_lsn_diff of pg_current_wal_lsn()'),
    per('WAL records (machine-wide)', c.walRecords, 2, 'pg_stat_wal.wal_records'),
    per('WAL full-page images (machine-wide)', c.walFullPages, 3, 'pg_stat_wal.wal_fpi'),
    per('WAL fsyncs (machine-wide)', c.walSyncs, 3, 'pg_stat_wal.wal_sync'),
    per('table + index bytes', c.total.bytes, 0, 'pg_total_relation_size, every table'),
    per('rows inserted', c.total.inserted, 2, 'pg_stat_user_tables.n_tup_ins'),
    per('rows updated', c.total.updated, 2, 'pg_stat_user_tables.n_tup_upd'),
  ];
}

function tableRows(c: Costs): string[][] {
  return [...c.tables].map(([name, d]) => [
    name, fixed(d.inserted / c.transfers, 3), fixed(d.updated / c.transfers, 3), fixed(d.deleted / c.transfers, 3), fixed(d.bytes / c.transfers, 0),
    fixed(d.indexBytes / c.transfers, 0),
  ]);
}

/** Cores busy during the load (warm-up included, the settling after it not): the CPU split. */
function cpuSplit(m: Measured): string {
  const from = m.before.cpu;
  const to = m.loadEnd;
  const wallMs = to.atMs - from.atMs;
  const pgCpu = postgresSplit(from, to, [m.after.backends, m.before.backends]);
  const cores = (ms: number): string => (ms / wallMs).toFixed(2);
  const machine = (to.machine.busyMs - from.machine.busyMs) / wallMs;
  return `cores busy during the load (${(wallMs / 1000).toFixed(1)} s, of ${cpus().length}): server ${cores(to.serverCpuMs - from.serverCpuMs)}, ` +
    `PostgreSQL ${cores(pgCpu.benchMs)} + background ${cores(pgCpu.backgroundMs)}, client ${cores(to.clientCpuMs - from.clientCpuMs)}; ` +
    `whole machine ${machine.toFixed(2)} (everything running on it)`;
}

function printCosts(m: Measured): void {
  const c = costsOf(m);
  const r = m.report;
  console.log(`\n${transferSummary([r])}`);
  console.log(`\n${formatTable(['figure', 'per transfer', 'run total', 'measured by'], figureRows(c, m))}`);
  console.log(`\n${formatTable(['table', 'inserted/transfer', 'updated/transfer', 'deleted/transfer', 'bytes/transfer', 'of which indexes'], tableRows(c))}`);
  console.log(`\n${cpuSplit(m)}`);
  const g = m.gauges;
  console.log(`server gauges, ${g.samples} samples: pool waiting max ${g.poolWaitingMax} (mean ${g.poolWaitingMean.toFixed(1)}), writer queue max ${g.writerQueueMax}, event-loop lag p99 max ${g.eventLoopLagP99MaxMs.toFixed(1)} ms`);
  const others = [...m.after.pg.otherCommits].reduce((a, [name, n]) => a + n - (m.before.pg.otherCommits.get(name) ?? n), 0);
  console.log(`other databases committed ${others} transactions meanwhile (their WAL is in the machine-wide figures)`);
  const per = (v: number, digits: number): string => fixed(v / c.transfers, digits);
  console.log(
    `\ncapacity: ${c.transfers} transfers; ${fixed(r.throughputPerS, 0)}/s, p50 ${fixed(r.latency.p50Ms, 1)} ms, p99 ${fixed(r.latency.p99Ms, 1)} ms in the window; ` +
      `per transfer: CPU ms server ${per(c.serverCpuMs, 3)}, PostgreSQL ${per(c.pgBenchCpuMs + c.pgBackgroundCpuMs, 3)}, client ${per(c.clientCpuMs, 3)}; ` +
      `${per(c.statements, 3)} commit statements, ${per(c.walBytes, 0)} WAL bytes, ${per(c.total.bytes, 0)} stored bytes`,
  );
}

// --- Balance reads ---

/** Jobs of one GET /v1/accounts/:id each: a balance, answered from the account actor's memory. */
function readJobs(client: LoadClient, s: SetupResult): () => Job {
  const accounts = s.accounts.byCurrency.get('USD')!;
  return () => ({
    op: 'read',
    send: async (): Promise<Outcome> => {
      const r = await client.get(`/v1/accounts/${pickFrom(accounts)}`, s.tenantKey);
      return classify(r.status, r.answer, r.error);
    },
  });
}

/** What a balance read costs, counted by the server (the warm-up's reads are in the CPU too). */
async function measureReads(session: Session, s: SetupResult, sql: pg.Client, load: LoadSpec): Promise<void> {
  const url = session.target.url;
  const reads = async (): Promise<number> => (await readExposition(url))('geopay_http_requests_total', 'route="/v1/accounts/:id",method="GET"') || 0;
  const backends = await readBackends(sql);
  const n0 = await reads();
  const from = await readCpu(url);
  const report = await measurePhase(closedLoop(load), 'balance reads', readJobs(session.client, s));
  const to = await readCpu(url);
  const n = (await reads()) - n0;
  const pgCpu = postgresSplit(from, to, [await readBackends(sql), backends]);
  const wallMs = to.atMs - from.atMs;
  const per = (ms: number): string => fixed(ms / n, 3);
  const cores = (ms: number): string => (ms / wallMs).toFixed(2);
  console.log(`\n${transferSummary([report])}`);
  console.log(
    `per balance read (${n} GET /v1/accounts/:id): CPU ms server ${per(to.serverCpuMs - from.serverCpuMs)}, PostgreSQL ${per(pgCpu.benchMs)} ` +
      `(+ background ${per(pgCpu.backgroundMs)}), client ${per(to.clientCpuMs - from.clientCpuMs)}; cores busy: server ${cores(to.serverCpuMs - from.serverCpuMs)}, ` +
      `PostgreSQL ${cores(pgCpu.benchMs)}, client ${cores(to.clientCpuMs - from.clientCpuMs)}, whole machine ${cores(to.machine.busyMs - from.machine.busyMs)}`,
  );
}

async function bench(session: Session, run: string, load: LoadSpec): Promise<number> {
  const { target, client } = session;
  console.log(`geopay bench:capacity: ${load.clients} clients, uniform over ${settings.accounts} accounts, warm-up ${settings.warmupSeconds} s, measure ${load.durationS} s, server ${target.url} (pid ${target.server?.pid})`);
  const s = await setup(client, {
    adminKey: target.adminKey, run, concurrency: settings.setupClients, liftRateLimits: true,
    spec: { accounts: settings.accounts, currencies: ['USD'], fundingMinor: settings.fundingMinor, overdraftMinor: 0n },
  });
  console.log(`setup: ${settings.accounts + 1} accounts opened, ${settings.accounts} funded in ${s.seconds.toFixed(1)} s`);
  const db = await target.openDatabase();
  const sql = new pg.Client({ connectionString: db!.url });
  await sql.connect();
  let m: Measured;
  try {
    m = await measureRun(session, s, sql, load);
    printCosts(m);
    await measureReads(session, s, sql, load);
  } finally {
    await sql.end();
  }
  const failures: string[] = [];
  if (m.inFlightLeft > 0) failures.push(`${m.inFlightLeft} transfers still in flight after ${settings.settleDeadlineMs} ms: the figures miss their credits`);
  if (m.report.counts.ok === 0) failures.push('the load completed no transfer');
  // The full checker: ledger, each leg once, keys, overdrafts, replay, seq and epochs.
  const checked = await checkTarget(target, undefined, settings.settleDeadlineMs);
  if (!checked?.ok) failures.push('ledger checker failed');
  for (const f of failures) console.log(`  ${f}`);
  console.log(failures.length === 0 ? 'ledger: PASS' : 'ledger: FAIL');
  return failures.length === 0 ? 0 : 1;
}

// --- Redis: the cluster's coordination traffic ---

/** Calls per command since the master started (INFO commandstats; a script's own calls are counted too). */
async function commandCalls(redis: Redis): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of (await redis.info('commandstats')).matchAll(/^cmdstat_([a-z|_-]+):calls=([0-9]+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

const callsDelta = (from: Map<string, number>, to: Map<string, number>, commands?: string[]): number =>
  [...to].filter(([c]) => commands === undefined || commands.includes(c)).reduce((a, [c, n]) => a + n - (from.get(c) ?? 0), 0);

/** What the settings predict per master and second: a lease extension per shard every TTL/3, a heartbeat and a membership read per node every HEARTBEAT_MS. */
function expectedScriptsPerS(shards: number, nodes: number): { leases: number; membership: number } {
  const { leaseTtlMs, heartbeatMs } = settings;
  return { leases: shards / (Math.floor(leaseTtlMs / 3) / 1000), membership: (2 * nodes) / (heartbeatMs / 1000) };
}

async function measureIdleRedis(masters: Redis[], seconds: number, shards: number, nodes: number): Promise<void> {
  const before = await Promise.all(masters.map(commandCalls));
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const after = await Promise.all(masters.map(commandCalls));
  const s = (performance.now() - t0) / 1000;
  const e = expectedScriptsPerS(shards, nodes);
  const rate = (i: number, commands?: string[]): string => fixed(callsDelta(before[i]!, after[i]!, commands) / s, 1);
  // Redlock sends its scripts as EVALSHA, membership as EVAL: the two columns tell them apart.
  const rows = masters.map((_, i) => [`master ${i}`, rate(i, ['evalsha']), fixed(e.leases, 1), rate(i, ['eval']), fixed(e.membership, 1), rate(i)]);
  console.log(`\nRedis, idle cluster of ${nodes} nodes and ${shards} shards, ${s.toFixed(1)} s (LEASE_TTL_MS ${settings.leaseTtlMs}, HEARTBEAT_MS ${settings.heartbeatMs}):`);
  console.log(formatTable(['master', 'EVALSHA/s (leases)', 'expected', 'EVAL/s (membership)', 'expected', 'all commands/s'], rows));
  console.log(`expected: ${shards} shards / (TTL/3) lease extensions; ${nodes} nodes x 2 (heartbeat, membership read) / HEARTBEAT_MS. All commands count the scripts' own calls.`);
}

/** The rate limiter's calls per /v1 request: INCRBY is sent by its reservation script alone (leases and membership never INCRBY). */
async function measureRateLimiter(master: Redis, url: string, adminKey: string, run: string): Promise<void> {
  const client = new LoadClient({ url, connections: 16, timeoutMs: settings.requestTimeoutMs, retries: 0, log: undefined, run, engine: 'geopay' });
  try {
    const before = await commandCalls(master);
    await inParallel(Array.from({ length: settings.redisProbeRequests }), 16, () => client.get(`/v1/accounts/probe-${randomBytes(4).toString('hex')}`, adminKey));
    const after = await commandCalls(master);
    const incr = callsDelta(before, after, ['incrby']);
    console.log(`rate limiter: ${incr} reservations (INCRBY, one EVALSHA each) on master 0 for ${settings.redisProbeRequests} GET /v1 requests (${(incr / settings.redisProbeRequests).toFixed(3)} per request; the other masters see none)`);
  } finally {
    await client.destroy();
  }
}

/**
 * A node joining a region of the idle cluster: from its start until the shards table names it
 * owner of its share of the region's shards (placement is balanced: floor(shards / nodes) at least).
 */
async function measureJoin(running: RunningCluster, region: string): Promise<void> {
  const url = running.cluster.nodes[0]!.url;
  const inRegion = (m: ClusterMap): ClusterMap['shards'] => m.shards.filter((x) => x.region === region);
  const before = await waitFor('the cluster map', 10_000, () => clusterMap(url, running.adminKey));
  const shards = inRegion(before).length;
  const share = Math.floor(shards / (running.cluster.live(region).length + 1));
  const t0 = performance.now();
  const node = await running.cluster.addNode(region);
  const listeningMs = performance.now() - t0;
  await waitFor(`${node.nodeId} to own ${share} shards`, settings.placementDeadlineMs, async () => {
    const m = await clusterMap(url, running.adminKey);
    return m && inRegion(m).filter((x) => x.owner === node.nodeId).length >= share ? m : undefined;
  }, 100);
  const ownedMs = performance.now() - t0 - listeningMs;
  console.log(`join: ${node.nodeId} listening ${(listeningMs / 1000).toFixed(1)} s after its start; owner of ${share} of ${region}'s ${shards} shards ${(ownedMs / 1000).toFixed(1)} s later (idle: no actor to drain)`);
}

async function clusterBench(seconds: number): Promise<number> {
  const opts = defaultOptions();
  opts.adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  opts.env.LOG_LEVEL = process.env.LOG_LEVEL ?? 'warn';
  const started = Date.now();
  const running = await startLocalCluster(opts);
  const offInterrupt = onInterrupt(() => running.shutdown());
  const masters = running.redis.urls.map((u) => new Redis(u, { maxRetriesPerRequest: 1 }));
  try {
    const url = running.cluster.nodes[0]!.url;
    const map = await waitFor('every shard owned', settings.placementDeadlineMs, async () => {
      const m = await clusterMap(url, running.adminKey);
      return m && m.shards.length > 0 && m.shards.every((x) => x.owner !== null) ? m : undefined;
    }, 500);
    console.log(`\nlocal cluster: ${running.cluster.nodes.length} nodes, ${running.redis.urls.length} Redis masters, every shard owned ${((Date.now() - started) / 1000).toFixed(1)} s after the start`);
    // The last takes' acquisitions and first extensions are past once a lease period went by.
    await sleep(settings.leaseTtlMs / 3);
    await measureIdleRedis(masters, seconds, map.shards.length, running.cluster.nodes.length);
    await measureRateLimiter(masters[0]!, url, running.adminKey, `capacity${Date.now().toString(36)}`);
    await measureJoin(running, 'eu');
    return 0;
  } finally {
    masters.forEach((r) => r.disconnect());
    await running.shutdown();
    offInterrupt();
  }
}

runMain(() => withOptions(USAGE, () => parseOptions(process.argv.slice(2), process.env.BENCH_SECONDS), async (o) => {
  const run = `capacity${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  // One keep-alive connection per client, so no request queues behind another in undici.
  const client = { connections: o.clients, timeoutMs: settings.requestTimeoutMs, retries: 0, run };
  const code = await withFreshServer(client, (session) => bench(session, run, o));
  return o.clusterS === undefined ? code : Math.max(code, await clusterBench(o.clusterS));
}));
