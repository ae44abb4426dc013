// The two ways to apply load. Open loop: request i is due at a fixed instant of a rate
// schedule and its latency runs from that instant, so a slow server cannot slow the arrivals
// down and hide its own queueing (no coordinated omission). Closed loop: C clients, each
// sending its next request when the last is answered, which measures capacity, not latency
// under a given load.
import { setTimeout as sleep } from 'node:timers/promises';
import type { LoadShape } from './options.ts';
import { RateSchedule } from './options.ts';
import { PhaseStats, type Outcome } from './stats.ts';

/** One request of the workload, made but not sent yet. */
export interface Job {
  op: string;
  /** Sends it (retries included) under the phase label of the request log. */
  send(phase: string, onRetry: () => void): Promise<Outcome>;
}

/** The same jobs, each outcome shown to `observe` once it is in (answers after a phase's window included). */
export function observedJobs(next: () => Job, observe: (outcome: Outcome) => void): () => Job {
  return () => {
    const job = next();
    return {
      op: job.op,
      send: async (phase, onRetry) => {
        const outcome = await job.send(phase, onRetry);
        observe(outcome);
        return outcome;
      },
    };
  };
}

export interface PhaseOptions {
  /** The workload's name; the request log labels measured requests with it. */
  name: string;
  load: LoadShape;
  durationS: number;
  /** Load applied before measuring (same shape, spike excluded), logged as 'warmup'. */
  warmupS: number;
  /** Open loop: requests outstanding at most; a request due beyond it is not sent and counts as an error. */
  maxInFlight: number;
  next(): Job;
  /** Called once measuring starts, with the stats being filled (progress display). */
  onMeasure?(stats: PhaseStats): void;
}

export interface PhaseRun {
  stats: PhaseStats;
  /** Measured window, seconds. */
  durationS: number;
}

const BACKLOG: Outcome = { kind: 'error', code: 'client_backlog' };

export async function runPhase(o: PhaseOptions): Promise<PhaseRun> {
  return o.load.mode === 'open' ? openLoop(o, o.load.rate, o.load.spike) : closedLoop(o, o.load.concurrency);
}

async function openLoop(o: PhaseOptions, rate: number, spike: Extract<LoadShape, { mode: 'open' }>['spike']): Promise<PhaseRun> {
  const inFlight = new Set<Promise<void>>();
  const stats = new PhaseStats(true);

  const drive = async (schedule: RateSchedule, measured: PhaseStats | undefined, label: string): Promise<void> => {
    const t0 = performance.now();
    measured?.start(t0);
    if (measured) o.onMeasure?.(measured);
    const total = schedule.total;
    let i = 0;
    while (i < total) {
      const elapsedS = (performance.now() - t0) / 1000;
      while (i < total && schedule.timeOf(i) <= elapsedS) {
        const dueMs = t0 + schedule.timeOf(i) * 1000;
        i++;
        const job = o.next();
        const sentMs = performance.now();
        measured?.onSent(job.op, sentMs, (sentMs - dueMs) * 1000);
        if (inFlight.size >= o.maxInFlight) {
          measured?.onDone(job.op, BACKLOG, 0, sentMs);
          continue;
        }
        const p = job.send(label, () => measured?.onRetry()).then(
          (outcome) => {
            const doneMs = performance.now();
            // From the instant it was due, not from when the client got round to sending it.
            measured?.onDone(job.op, outcome, (doneMs - dueMs) * 1000, doneMs);
          },
          (err: unknown) => {
            measured?.onDone(job.op, { kind: 'error', code: `client:${(err as Error).message}` }, 0, performance.now());
          },
        ).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      if (i >= total) break;
      const waitMs = t0 + schedule.timeOf(i) * 1000 - performance.now();
      // Never spin (setImmediate in a loop would burn a core the server shares on this
      // machine): sleep at least a timer tick and send everything due on waking. The tick's
      // lateness is counted in the latency, since that runs from the due time.
      await sleep(Math.max(1, Math.min(waitMs, 50)));
    }
    // The window ends on the schedule's clock, whatever is still outstanding.
    const endMs = t0 + schedule.durationS * 1000;
    const rest = endMs - performance.now();
    if (rest > 0) await sleep(rest);
    measured?.finish(performance.now());
  };

  if (o.warmupS > 0) await drive(new RateSchedule(rate, undefined, o.warmupS), undefined, 'warmup');
  await drive(new RateSchedule(rate, spike, o.durationS), stats, o.name);
  // Every request due in the window counts, however late its answer: wait for all of them.
  // Each is bounded by the client's timeout and retries, so this ends.
  while (inFlight.size > 0) await Promise.all([...inFlight]);
  return { stats, durationS: o.durationS };
}

async function closedLoop(o: PhaseOptions, concurrency: number): Promise<PhaseRun> {
  const stats = new PhaseStats(false);
  let measuring = false;
  let stopped = false;

  const worker = async (): Promise<void> => {
    while (!stopped) {
      const job = o.next();
      const counted = measuring;
      const t0 = performance.now();
      if (counted) stats.onSent(job.op, t0);
      let outcome: Outcome;
      try {
        outcome = await job.send(counted ? o.name : 'warmup', () => { if (measuring) stats.onRetry(); });
      } catch (err) {
        outcome = { kind: 'error', code: `client:${(err as Error).message}` };
      }
      // Answers inside the window count (stats ignores those after finish()); one started in
      // the warm-up and answered inside counts too: throughput is answers per second.
      if (measuring || counted) stats.onDone(job.op, outcome, (performance.now() - t0) * 1000, performance.now());
    }
  };

  const workers = Array.from({ length: concurrency }, worker);
  if (o.warmupS > 0) await sleep(o.warmupS * 1000);
  const start = performance.now();
  stats.start(start);
  o.onMeasure?.(stats);
  measuring = true;
  await sleep(o.durationS * 1000);
  stats.finish(performance.now());
  measuring = false;
  stopped = true;
  await Promise.all(workers);
  return { stats, durationS: o.durationS };
}
