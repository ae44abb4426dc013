// Throughput and latency of transfers through the HTTP API, server in a child process on a
// database of its own. Two workloads bound the actor design: "hot" funnels every credit into
// one account (one mailbox serialises them), "uniform" spreads them over 10,000 accounts.
// Closed loop: each client sends its next request when the previous one is answered.
import { randomBytes } from 'node:crypto';
import { ledgerTotals } from './lib/ledger.ts';
import { runBench } from './lib/main.ts';
import { anyTwo, ceilingPhase, measurePhase, pickFrom, transferJobs } from './lib/phases.ts';
import { progress } from './lib/progress.ts';
import type { PhaseReport } from './lib/report.ts';
import { withFreshServer, type Session } from './lib/session.ts';
import { setup, type SetupResult } from './lib/setup.ts';
import { rateRatio, transferSummary } from './lib/summary.ts';
import { readMetrics } from './lib/target.ts';

const USAGE = `usage: npm run bench:core -- [--duration S]
  --duration S   measured seconds per workload (default: BENCH_SECONDS, else 15)
Other variables (WRITER_LANES=8, ...) reach the server it starts.
`;

// Read once: the bench has no config module of its own, and only the duration is tunable.
const settings = Object.freeze({
  warmupSeconds: 2,
  clients: 64,
  setupClients: 64,
  hotSources: 1_000,
  uniformAccounts: 10_000,
  /** Enough that no source runs dry at 100 minor units a transfer, so no run measures refusals. */
  fundingMinor: 1_000_000_000n,
  maxAmountMinor: 100,
  /** The relay re-delivers on its own clock; a minute is far past any healthy backlog. */
  settleDeadlineMs: 60_000,
  /** Per attempt; no retries: a 503 or a timeout is a figure of the run, not something to hide. */
  requestTimeoutMs: 30_000,
});

/** hot, uniform and the HTTP ceiling, one after the other on the same server and client. */
async function runWorkloads(session: Session, s: SetupResult, durationS: number): Promise<PhaseReport[]> {
  const ui = progress();
  const common = {
    engine: 'geopay', load: { mode: 'closed', concurrency: settings.clients } as const, durationS, warmupS: settings.warmupSeconds,
    maxInFlight: settings.clients, progress: ui,
  };
  const accounts = s.accounts.byCurrency.get('USD')!;
  const hotDestination = s.accounts.merchants.get('USD')!;
  // The hot sources are the first 1,000 of the uniform accounts; the hot destination is the
  // merchant, extra, so the uniform phase does not also land on it.
  const hotSources = accounts.slice(0, settings.hotSources);
  const jobs = (pickPair: () => [string, string]) => transferJobs({
    clients: [session.client], tenantId: s.tenantId, tenantKey: s.tenantKey, currency: 'USD', maxAmountMinor: settings.maxAmountMinor, pickPair,
  });
  const hot = await measurePhase(common, 'hot', jobs(() => [pickFrom(hotSources), hotDestination]));
  const uniform = await measurePhase(common, 'uniform', jobs(anyTwo(accounts)));
  // The HTTP ceiling: the same server, client and concurrency on a route that does nothing.
  const ceiling = await ceilingPhase({ ...common, client: session.client });
  return [hot, uniform, ceiling];
}

/** The ledger after the run: nothing in flight, the journal sums to zero, each transfer once. */
async function verifyLedger(session: Session, databaseUrl: string, s: SetupResult): Promise<string[]> {
  const failures: string[] = [];
  const hotDestination = s.accounts.merchants.get('USD')!;
  const funded = s.accounts.byCurrency.get('USD')!.length;
  const totals = await ledgerTotals(databaseUrl, settings.settleDeadlineMs, [hotDestination]);
  if (totals.inFlight !== 0) failures.push(`${totals.inFlight} transfers still in flight after ${settings.settleDeadlineMs} ms`);
  if (totals.journalSum !== 0n) failures.push(`sum of journal amounts is ${totals.journalSum}, not 0`);
  if (totals.unbalanced !== 0) failures.push(`${totals.unbalanced} transfers without exactly one debit and one credit posting`);
  const expected = settings.fundingMinor * BigInt(funded);
  if (totals.customerSum !== expected) failures.push(`customer balances sum to ${totals.customerSum}, deposits were ${expected}`);
  // The hottest account is where a lost or doubled credit would most likely show.
  const journalHot = String(totals.accountSums.get(hotDestination));
  const res = await session.client.get(`/v1/accounts/${hotDestination}`, s.tenantKey);
  const balance = (res.answer as { balance?: unknown } | null)?.balance;
  if (res.status !== 200 || balance !== journalHot) {
    failures.push(`hot account: API says ${res.status ?? res.error} ${JSON.stringify(balance)}, journal ${journalHot}`);
  }
  return failures;
}

function printFigures(phases: PhaseReport[], metric: (name: string) => number): void {
  const [hot, uniform, ceiling] = phases as [PhaseReport, PhaseReport, PhaseReport];
  console.log(`\n${transferSummary(phases)}`);
  console.log(`\nhot/uniform transfers/s: ${rateRatio(hot, uniform).toFixed(2)}`);
  console.log(`of the HTTP ceiling (GET /healthz, ${ceiling.throughputPerS.toFixed(0)}/s): hot ${(100 * rateRatio(hot, ceiling)).toFixed(0)}%, uniform ${(100 * rateRatio(uniform, ceiling)).toFixed(0)}%`);
  const statements = metric('commit_statements_total');
  const batches = metric('actor_batches_committed_total');
  console.log(`commits: ${batches} actor batches in ${statements} transactions (${(batches / statements).toFixed(1)} per transaction)`);
}

async function bench(session: Session, run: string, durationS: number): Promise<number> {
  const { target, client } = session;
  console.log(
    `geopay bench: ${settings.clients} clients, warm-up ${settings.warmupSeconds} s, measure ${durationS} s, server ${target.url} (pid ${target.server?.pid})`,
  );
  const s = await setup(client, {
    adminKey: target.adminKey, run, concurrency: settings.setupClients, liftRateLimits: true,
    spec: { accounts: settings.uniformAccounts, currencies: ['USD'], fundingMinor: settings.fundingMinor, overdraftMinor: 0n },
  });
  console.log(`setup: ${settings.uniformAccounts + 1} accounts opened, ${settings.uniformAccounts} funded in ${s.seconds.toFixed(1)} s`);
  const phases = await runWorkloads(session, s, durationS);
  printFigures(phases, await readMetrics(target.url));

  const failures = await verifyLedger(session, (await target.openDatabase())!.url, s);
  if (phases.slice(0, 2).some((p) => p.counts.ok === 0)) failures.push('a workload completed no transfer');
  for (const f of failures) console.log(`  ${f}`);
  console.log(failures.length === 0 ? 'ledger: PASS' : 'ledger: FAIL');
  return failures.length === 0 ? 0 : 1;
}

runBench(USAGE, 15, (durationS) => {
  const run = `core${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  // One keep-alive connection per client, so no request queues behind another in undici.
  const client = { connections: settings.clients, timeoutMs: settings.requestTimeoutMs, retries: 0, run };
  return withFreshServer(client, (session) => bench(session, run, durationS));
});
