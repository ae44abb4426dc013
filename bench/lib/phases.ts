// The measured phases of every bench, all run by the one runner (drivers.ts) and summarised
// into a PhaseReport: a workload phase (payments from the seeded stream, each with its own
// idempotency key), plain transfers between accounts a bench picks (core, cluster), any other
// job a bench builds (batch), and the HTTP ceiling (GET /healthz, same server and client).
import { randomUUID } from 'node:crypto';
import { classify, type LoadClient } from './client.ts';
import { runPhase, type Job, type PhaseRun } from './drivers.ts';
import { describeLoad, describeMix, describeSkew, type LoadShape, type WorkloadSpec } from './options.ts';
import type { Progress } from './progress.ts';
import type { PhaseReport } from './report.ts';
import type { SetupResult } from './setup.ts';
import { histogramData, summarize, type Outcome } from './stats.ts';
import { Workload } from './workload.ts';

export interface PhaseCommon {
  engine: string;
  load: LoadShape;
  durationS: number;
  warmupS: number;
  maxInFlight: number;
  progress: Progress;
}

/** Summarises a finished phase: counts, throughput, latency summary, series, histogram. */
export function toReport(run: PhaseRun, meta: { engine: string; workload: string; load: LoadShape; mix?: string; skew?: string }): PhaseReport {
  const s = run.stats;
  return {
    engine: meta.engine,
    workload: meta.workload,
    load: describeLoad(meta.load),
    ...(meta.mix ? { mix: meta.mix } : {}),
    ...(meta.skew ? { skew: meta.skew } : {}),
    durationS: run.durationS,
    counts: s.counts,
    throughputPerS: s.throughputPerS(),
    latency: summarize(s.latency),
    ...(meta.load.mode === 'open' ? { sendLag: summarize(s.sendLag) } : {}),
    series: s.series,
    histogram: histogramData(s.latency),
  };
}

/** Runs one phase of `next`'s jobs under the progress line, and summarises it. */
export async function measurePhase(
  common: PhaseCommon, name: string, next: () => Job, meta: { mix?: string; skew?: string } = {},
): Promise<PhaseReport> {
  let stop: (() => void) | undefined;
  let run: PhaseRun;
  try {
    run = await runPhase({
      name, load: common.load, durationS: common.durationS, warmupS: common.warmupS, maxInFlight: common.maxInFlight, next,
      onMeasure: (stats) => { stop = common.progress.track(`${common.engine} ${name}`, stats, common.durationS); },
    });
  } finally {
    stop?.();
  }
  return toReport(run, { engine: common.engine, workload: name, load: common.load, ...meta });
}

export async function workloadPhase(
  common: PhaseCommon & { client: LoadClient; name: string; run: string; spec: WorkloadSpec; setup: SetupResult; seed: number },
): Promise<PhaseReport> {
  const workload = new Workload(common.spec, common.setup.accounts, common.seed);
  const { tenantId, tenantKey } = common.setup;
  const next = (): Job => {
    const op = workload.next();
    // Unique per run, phase and position in the stream; a retry reuses it.
    const key = `${common.run}-${common.name}-${workload.generated}`;
    return {
      op: op.kind,
      send: async (phase, onRetry) => {
        // A refund's first step is a plain transfer, and is logged (and checked) as one.
        const first = await common.client.post({ op: op.kind === 'refund' ? 'transfer' : op.kind, path: op.path, body: op.body, key, bearer: tenantKey, tenant: tenantId, phase }, onRetry);
        const id = (first.answer as { id?: unknown } | null)?.id;
        if (!op.then || first.outcome.kind !== 'ok' || typeof id !== 'string') return first.outcome;
        const second = await common.client.post({ op: op.then.op, path: op.then.path(id), body: op.then.body, key: `${key}-${op.then.op}`, bearer: tenantKey, tenant: tenantId, phase }, onRetry);
        return second.outcome;
      },
    };
  };
  return measurePhase(common, common.name, next, { mix: describeMix(common.spec.mix), skew: describeSkew(common.spec.skew) });
}

/** What the server and client manage when the handler does nothing: the bound on any route. */
export async function ceilingPhase(common: PhaseCommon & { client: LoadClient }): Promise<PhaseReport> {
  const next = (): Job => ({
    op: 'healthz',
    send: async (): Promise<Outcome> => {
      const r = await common.client.get('/healthz');
      return classify(r.status, r.answer, r.error);
    },
  });
  return measurePhase(common, 'ceiling', next);
}

/** One of `xs` at random: Math.random, since the fixed benches' workloads need no replay (loadtest's do, and are seeded). */
export const pickFrom = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

/** Two different accounts of `accounts` at random: the uniform workload of core, batch and cluster. */
export function anyTwo(accounts: readonly string[]): () => [string, string] {
  return () => {
    const source = pickFrom(accounts);
    let destination = pickFrom(accounts);
    while (destination === source) destination = pickFrom(accounts);
    return [source, destination];
  };
}

export interface TransferJobs {
  /** Each request goes to the next client in turn: a cluster bench spreads its load over every node. */
  clients: readonly LoadClient[];
  tenantId: string;
  tenantKey: string;
  currency: string;
  /** Amounts are uniform in 1..maxAmountMinor. */
  maxAmountMinor: number;
  /** The source and destination of the next transfer: the workload. */
  pickPair(): [string, string];
}

/** Jobs of one POST /v1/transfers each, with a key of its own, between the accounts `pickPair` names. */
export function transferJobs(o: TransferJobs): () => Job {
  let n = 0;
  return () => {
    const client = o.clients[n++ % o.clients.length]!;
    const [sourceAccountId, destinationAccountId] = o.pickPair();
    const amount = String(1 + Math.floor(Math.random() * o.maxAmountMinor));
    const body = { sourceAccountId, destinationAccountId, amount, currency: o.currency };
    const key = randomUUID();
    return {
      op: 'transfer',
      send: async (phase, onRetry) =>
        (await client.post({ op: 'transfer', path: '/v1/transfers', body, key, bearer: o.tenantKey, tenant: o.tenantId, phase }, onRetry)).outcome,
    };
  };
}

/** Two different accounts of one region, the region at random (a transfer that stays in its database). */
export function sameRegion(accountsByRegion: Map<string, string[]>): () => [string, string] {
  const pickers = [...accountsByRegion.values()].map(anyTwo);
  return () => pickFrom(pickers)();
}

/** Accounts of two different regions: every transfer a saga between two databases. */
export function crossRegion(accountsByRegion: Map<string, string[]>): () => [string, string] {
  const lists = [...accountsByRegion.values()];
  return () => {
    const from = pickFrom(lists);
    let to = pickFrom(lists);
    while (to === from) to = pickFrom(lists);
    return [pickFrom(from), pickFrom(to)];
  };
}
