// The terminal summaries of measured phases, one row per PhaseReport: the full one of loadtest
// and compare (every count and percentile), and the transfer one of core and cluster (ok split
// into settled and accepted, every answer that was not ok by its code).
import type { PhaseReport } from './report.ts';
import { sumValues } from './stats.ts';
import { fixed, formatTable } from './table.ts';

export function phaseSummary(phases: PhaseReport[]): string {
  return formatTable(
    ['engine', 'workload', 'sent', 'ok', 'rejected', 'errors', 'retries', 'ok/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'],
    phases.map((p) => [
      p.engine, p.workload, String(p.counts.sent), String(p.counts.ok), String(sumValues(p.counts.rejected)),
      String(sumValues(p.counts.errors)), String(p.counts.retries), fixed(p.throughputPerS, 0),
      fixed(p.latency.p50Ms, 2), fixed(p.latency.p90Ms, 2), fixed(p.latency.p99Ms, 2), fixed(p.latency.maxMs, 1),
    ]),
  );
}

/**
 * Business refusals and errors alike, `code:count` (`503/unavailable:3`): in these benches
 * anything not ok is news. The space in an error code would read as a separator here.
 */
function notOk(p: PhaseReport): string {
  const all = [...Object.entries(p.counts.rejected), ...Object.entries(p.counts.errors)];
  return all.length === 0 ? '0' : all.map(([code, n]) => `${code.replace(/ /g, '/')}:${n}`).join(' ');
}

export function transferSummary(phases: PhaseReport[]): string {
  return formatTable(
    ['workload', 'requests', 'ok (201/202)', 'rejected', 'transfers/s', 'p50 ms', 'p99 ms'],
    phases.map((p) => {
      const c = p.counts;
      // The ceiling's ok answers are 200s, neither settled nor accepted: no split to show.
      const ok = c.settled + c.accepted === c.ok ? `${c.ok} (${c.settled}/${c.accepted})` : String(c.ok);
      return [p.workload, String(c.sent), ok, notOk(p), fixed(p.throughputPerS, 0), fixed(p.latency.p50Ms, 2), fixed(p.latency.p99Ms, 2)];
    }),
  );
}

/** Throughput of `a` over `b`; NaN or Infinity when one carried nothing, printed as such rather than hidden. */
export const rateRatio = (a: PhaseReport, b: PhaseReport): number => a.throughputPerS / b.throughputPerS;
