// The measured phases shared by `loadtest` and `compare`: a workload phase (payments from the
// seeded stream, each with its own idempotency key) and the HTTP ceiling (GET /healthz on the
// same server with the same client), each summarised into a PhaseReport.
import type { LoadClient } from './client.ts';
import { runPhase, type Job, type PhaseRun } from './drivers.ts';
import { describeLoad, describeMix, describeSkew, type LoadShape, type WorkloadSpec } from './options.ts';
import type { Progress } from './progress.ts';
import type { PhaseReport } from './report.ts';
import type { SetupResult } from './setup.ts';
import { histogramData, summarize, type Outcome } from './stats.ts';
import { classify } from './client.ts';
import { Workload } from './workload.ts';

export interface PhaseCommon {
  client: LoadClient;
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

async function tracked(common: PhaseCommon, label: string, next: () => Job, name: string): Promise<PhaseRun> {
  let stop: (() => void) | undefined;
  try {
    return await runPhase({
      name, load: common.load, durationS: common.durationS, warmupS: common.warmupS, maxInFlight: common.maxInFlight, next,
      onMeasure: (stats) => { stop = common.progress.track(label, stats, common.durationS); },
    });
  } finally {
    stop?.();
  }
}

export async function workloadPhase(
  common: PhaseCommon & { name: string; run: string; spec: WorkloadSpec; setup: SetupResult; seed: number },
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
  const run = await tracked(common, `${common.engine} ${common.name}`, next, common.name);
  return toReport(run, {
    engine: common.engine, workload: common.name, load: common.load, mix: describeMix(common.spec.mix), skew: describeSkew(common.spec.skew),
  });
}

/** What the server and client manage when the handler does nothing: the bound on any route. */
export async function ceilingPhase(common: PhaseCommon): Promise<PhaseReport> {
  const next = (): Job => ({
    op: 'healthz',
    send: async (): Promise<Outcome> => {
      const r = await common.client.get('/healthz');
      return classify(r.status, r.answer, r.error);
    },
  });
  const run = await tracked(common, `${common.engine} ceiling`, next, 'ceiling');
  return toReport(run, { engine: common.engine, workload: 'ceiling', load: common.load });
}
