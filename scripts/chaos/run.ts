// One chaos run: a world started once, then for each fault in turn a scenario: load, the fault
// injected a quarter in and healed by itself, load on until the scenario's seconds are up, the
// load's writes answered, everything in flight settled, and the cross-database checker on
// every region's database with the scenario's request log. Between scenarios every part is
// brought back (nodes, Redis masters, PostgreSQL servers, nats-server), so each fault starts
// from a healthy cluster.
import { setTimeout as sleep } from 'node:timers/promises';
import type { RequestRecord } from '../../bench/lib/request-log.ts';
import { checkRegions, IN_FLIGHT } from '../../bench/checker.ts';
import { onInterrupt } from '../../bench/lib/main.ts';
import type { Fault, FaultContext } from './faults.ts';
import { FAULTS } from './matrix.ts';
import { ChaosLoad } from './load.ts';
import type { ChaosReport, FaultRow } from './types.ts';
import { REGIONS, startWorld, type World } from './world.ts';

export interface ChaosOptions {
  /** Fault ids, in the matrix's order; empty: all. */
  only: string[];
  /** Seconds of load per fault. */
  seconds: number;
  seed: number;
  /** Open-loop writes per second. */
  rate: number;
  /** Node environment (LEASE_TTL_MS, ...); empty keeps every default. */
  env: Record<string, string>;
  accountsPerRegion: number;
  command: string;
  /** Told each row as it is done (the CLI prints it). */
  onRow?: (row: FaultRow) => void;
  /** Told what is happening (start, each scenario's phases). */
  onProgress?: (line: string) => void;
  /** Shown the world once it runs (a test reads its processes' pids). */
  onWorld?: (world: World) => void;
}

const BUCKET_S = 0.5;
/** A client gives up on a write this long after its first attempt. */
const DEADLINE_MS = 30_000;
const SETTLE_TIMEOUT_MS = 120_000;
/** Load after the heal at the least, so the plot shows the recovery. */
const TAIL_S = 4;
const SPIKE_LIMIT_PER_S = 10;

export function selectFaults(only: string[]): Fault[] {
  if (only.length === 0) return [...FAULTS];
  const unknown = only.filter((id) => !FAULTS.some((f) => f.id === id));
  if (unknown.length > 0) throw new Error(`unknown fault(s) ${unknown.join(', ')}: one of ${FAULTS.map((f) => f.id).join(', ')}`);
  return FAULTS.filter((f) => only.includes(f.id));
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const faults = selectFaults(o.only);
  const startedAt = new Date().toISOString();
  let records: RequestRecord[] = [];
  const say = o.onProgress ?? (() => undefined);
  say(`starting the cluster: 3 regions x 2 nodes, 3 Redis masters, a PostgreSQL server per region, a nats-server${faults.some((f) => f.network) ? ', each node and master in a network namespace of its own' : ''}`);
  // On a network of namespaces when a fault needs one; on loopback otherwise.
  const netns = faults.some((f) => f.network === true);
  const world = await startWorld({ accountsPerRegion: o.accountsPerRegion, spikeLimitPerS: SPIKE_LIMIT_PER_S, env: o.env, record: (r) => records.push(r), netns });
  o.onWorld?.(world);
  // Ctrl-C or a failure: every process the world started is stopped, its folders removed.
  const offInterrupt = onInterrupt(() => world.shutdown());
  const rows: FaultRow[] = [];
  try {
    for (const [i, fault] of faults.entries()) {
      records = [];
      say(`${fault.id}: ${o.seconds} s of load at ${o.rate}/s`);
      const row = await scenario(world, fault, { ...o, seed: o.seed + i }, () => records);
      rows.push(row);
      o.onRow?.(row);
      await restore(world);
    }
  } finally {
    offInterrupt();
    await world.shutdown();
  }
  const longest = Math.max(0, ...rows.map((r) => r.longestWindowMs));
  return {
    startedAt, command: o.command, seed: o.seed, seconds: o.seconds, rate: o.rate, leaseTtlMs: world.leaseTtlMs,
    cluster: { regions: Object.fromEntries(REGIONS.map((r) => [r, 2])), redisMasters: 3, postgres: 3, nats: 1 },
    rows, totals: { faults: rows.length, violations: rows.reduce((n, r) => n + r.violations, 0), longestWindowMs: longest },
  };
}

/** Every part of the world up again, whatever the fault left down. */
async function restore(world: World): Promise<void> {
  const { redis, pgInstances } = world.running;
  for (let i = 0; i < redis.urls.length; i++) if (redis.pid(i) === undefined) await redis.restart(i);
  for (const pg of Object.values(pgInstances ?? {})) if (!pg.running) await pg.start();
  await world.network?.heal();
  await world.network?.undelay();
  if (world.nats.pid(0) === undefined) await world.nats.restart(0);
  await world.heal();
}

async function scenario(world: World, fault: Fault, o: ChaosOptions, log: () => RequestRecord[]): Promise<FaultRow> {
  const load = new ChaosLoad(world, { rate: o.rate, seed: o.seed, phase: fault.id, deadlineMs: DEADLINE_MS });
  const extra: FaultContext['extra'] = { sent: 0, acknowledged: 0, rateLimited: 0, other: 0, failures: [] };
  await fault.prepare?.(world);
  load.start();
  await sleep(Math.max(2, o.seconds / 4) * 1000);
  const faultStartS = load.now();
  const injected = await fault.run({ world, seconds: o.seconds, extra });
  const faultEndS = load.now();
  const healedAt = performance.now();
  const settling = settled(world, new Date(), healedAt);
  await restore(world);
  const left = Math.max(o.seconds - load.now(), TAIL_S);
  await sleep(left * 1000);
  const res = await load.stop();
  o.onProgress?.(`${fault.id}: load done (${res.sent} writes), waiting for what is in flight`);
  const settleMs = await settling;
  const check = await checkRegions(world.pools, { requests: log(), settleTimeoutMs: 30_000 });
  const windowMsByRegion = Object.fromEntries(REGIONS.map((r) => [r, load.window((a) => a.region === r)]));
  const affected = injected.affected
    ? { label: injected.affected.label, windowMs: load.window((a) => injected.affected!.accounts.has(a.account)) }
    : null;
  const failures = [...res.replayMismatches, ...extra.failures, ...check.failures];
  return {
    fault: fault.id, action: injected.action, loadSeconds: res.seconds,
    sent: res.sent + extra.sent, acknowledged: res.acknowledged + extra.acknowledged, refused: res.refused, refusedCodes: res.refusedCodes, attemptErrors: res.attemptErrors, unavailable: res.unavailable,
    rateLimited: res.rateLimited + extra.rateLimited, other: res.other + extra.other,
    replays: res.replays, replayMismatches: res.replayMismatches.length, p50Ms: res.p50Ms, p99Ms: res.p99Ms,
    windowMsByRegion, affected,
    longestWindowMs: Math.max(...Object.values(windowMsByRegion), affected?.windowMs ?? 0),
    boundMs: fault.boundMs(world, { seconds: o.seconds }), settleMs,
    violations: failures.length, failures: failures.slice(0, 20),
    faultStartS, faultEndS, timeline: load.timeline(BUCKET_S), bucketS: BUCKET_S,
  };
}

/**
 * From the heal until no transfer created before it is in flight in any region's database, ms
 * (bounded). created_at is the writing node's clock, this machine's.
 */
async function settled(world: World, healedAtWall: Date, healedAt: number): Promise<number> {
  const deadline = performance.now() + SETTLE_TIMEOUT_MS;
  for (;;) {
    let n = 0;
    for (const pool of Object.values(world.pools)) {
      try {
        n += Number((await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM transfers WHERE state = ANY($1) AND created_at <= $2', [IN_FLIGHT, healedAtWall])).rows[0]!.n);
      } catch {
        n += 1; // a database that does not answer yet has not settled
      }
    }
    if (n === 0 || performance.now() > deadline) return Math.round(performance.now() - healedAt);
    await sleep(100);
  }
}
