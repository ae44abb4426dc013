// Transfers per second through POST /v1/transfers/batch on the real PostgreSQL, uniform over
// 2,000 accounts and with 90% of the items crediting one hot account, against single
// POST /v1/transfers at 64 clients measured in the same run. Ends by checking the ledger.
import { randomBytes, randomUUID } from 'node:crypto';
import type { LoadClient } from './lib/client.ts';
import { observedJobs, type Job } from './lib/drivers.ts';
import { ledgerTotals } from './lib/ledger.ts';
import { runBench } from './lib/main.ts';
import { anyTwo, measurePhase, pickFrom, transferJobs, type PhaseCommon } from './lib/phases.ts';
import { progress } from './lib/progress.ts';
import type { PhaseReport } from './lib/report.ts';
import { withFreshServer, type Session } from './lib/session.ts';
import { setup, type SetupResult } from './lib/setup.ts';
import type { Outcome } from './lib/stats.ts';
import { rateRatio } from './lib/summary.ts';
import { fixed, formatTable } from './lib/table.ts';
import { readMetrics } from './lib/target.ts';

const USAGE = `usage: npm run bench:batch -- [--duration S]
  --duration S   measured seconds per phase (default: BENCH_SECONDS, else 15)
`;

const settings = Object.freeze({
  accounts: 2_000,
  batchSize: 1_000,
  /** Batches in flight at once: enough to keep the node's writer busy. */
  batchClients: 4,
  singleClients: 64,
  hotShare: 0.9,
  fundingMinor: 1_000_000_000n,
  /** A batch of 1,000 takes seconds under load; a timeout would cut the figure, not the wait. */
  requestTimeoutMs: 120_000,
  settleDeadlineMs: 60_000,
});

interface BatchPhase {
  report: PhaseReport;
  /** Items per request: the batch size, or 1. */
  itemsPerRequest: number;
  /** Items committed by the phase's requests, those answered after the window included. */
  committed: number;
  /** Commit statements the server ran meanwhile (its metric, before and after). */
  statements: number;
}

/** Jobs of one batch of `batchSize` transfers each; a share `hotShare` of them credit `hot`. */
function batchJobs(client: LoadClient, s: SetupResult, hot: string, hotShare: number): () => Job {
  const accounts = s.accounts.byCurrency.get('USD')!;
  return () => ({
    op: 'batch',
    send: async (phase, onRetry): Promise<Outcome> => {
      const items = Array.from({ length: settings.batchSize }, () => {
        const src = pickFrom(accounts);
        let dst = Math.random() < hotShare ? hot : pickFrom(accounts);
        while (dst === src) dst = pickFrom(accounts);
        return { sourceAccountId: src, destinationAccountId: dst, amount: String(1 + Math.floor(Math.random() * 100)), currency: 'USD' };
      });
      const r = await client.post(
        { op: 'batch', path: '/v1/transfers/batch', body: { items }, key: randomUUID(), bearer: s.tenantKey, tenant: s.tenantId, phase }, onRetry,
      );
      if (r.status !== 200) return r.outcome;
      const ok = (r.answer as { items: { status: number }[] }).items.filter((x) => x.status === 201 || x.status === 202).length;
      return { kind: 'ok', status: 200, items: ok };
    },
  });
}

/**
 * The phase, with the server's commit statements counted around it. Items per transaction
 * holds every item committed against them, answers after the window included, since the
 * statement counter is read once all of the phase's requests are answered.
 */
async function measured(url: string, common: PhaseCommon, name: string, itemsPerRequest: number, next: () => Job): Promise<BatchPhase> {
  let committed = 0;
  const counted = observedJobs(next, (outcome) => { if (outcome.kind === 'ok') committed += outcome.items ?? 1; });
  const before = (await readMetrics(url))('commit_statements_total');
  const report = await measurePhase(common, name, counted);
  const statements = (await readMetrics(url))('commit_statements_total') - before;
  return { report, itemsPerRequest, committed, statements };
}

function printTable(phases: BatchPhase[]): void {
  const header = ['phase', 'items', 'ok', 'transfers/s', 'request p50 ms', 'request p99 ms', 'items per transaction'];
  const rows = phases.map((p) => [
    p.report.workload, String(p.report.counts.sent * p.itemsPerRequest), String(p.report.counts.ok), fixed(p.report.throughputPerS, 0),
    fixed(p.report.latency.p50Ms, 1), fixed(p.report.latency.p99Ms, 1), fixed(p.committed / p.statements, 1),
  ]);
  console.log(`\n${formatTable(header, rows)}`);
  const [uniform, hot, single] = phases.map((p) => p.report) as [PhaseReport, PhaseReport, PhaseReport];
  console.log(`\nbatch over single POST /v1/transfers: uniform ${rateRatio(uniform, single).toFixed(1)}x, hot ${rateRatio(hot, single).toFixed(1)}x`);
}

async function bench({ target, client }: Session, run: string, durationS: number): Promise<number> {
  console.log(`geopay bench:batch: batches of ${settings.batchSize}, ${settings.batchClients} in flight, ${durationS} s per phase, server ${target.url}`);
  // The hot account is the setup's merchant: extra, so the uniform items do not land on it.
  const s = await setup(client, {
    adminKey: target.adminKey, run, concurrency: settings.singleClients, liftRateLimits: true,
    spec: { accounts: settings.accounts, currencies: ['USD'], fundingMinor: settings.fundingMinor, overdraftMinor: 0n },
  });
  const hot = s.accounts.merchants.get('USD')!;
  const accounts = s.accounts.byCurrency.get('USD')!;
  const closed = (clients: number): PhaseCommon => ({
    engine: 'geopay', load: { mode: 'closed', concurrency: clients }, durationS, warmupS: 0, maxInFlight: clients, progress: progress(),
  });
  const singles = transferJobs({
    clients: [client], tenantId: s.tenantId, tenantKey: s.tenantKey, currency: 'USD', maxAmountMinor: 5,
    pickPair: anyTwo(accounts),
  });
  const phases = [
    await measured(target.url, closed(settings.batchClients), 'batch uniform', settings.batchSize, batchJobs(client, s, hot, 0)),
    await measured(target.url, closed(settings.batchClients), 'batch hot 90%', settings.batchSize, batchJobs(client, s, hot, settings.hotShare)),
    await measured(target.url, closed(settings.singleClients), 'single uniform', 1, singles),
  ];
  printTable(phases);
  return checkLedger((await target.openDatabase())!.url);
}

/** The ledger once nothing is in flight. */
async function checkLedger(databaseUrl: string): Promise<number> {
  const t = await ledgerTotals(databaseUrl, settings.settleDeadlineMs);
  const ok = t.inFlight === 0 && t.journalSum === 0n && t.unbalanced === 0;
  console.log(`ledger: in flight ${t.inFlight}, sum ${t.journalSum}, transfers without one debit and one credit ${t.unbalanced}: ${ok ? 'PASS' : 'FAIL'}`);
  return ok ? 0 : 1;
}

runBench(USAGE, 15, (durationS) => {
  const run = `batch${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  const client = { connections: settings.singleClients, timeoutMs: settings.requestTimeoutMs, retries: 0, run };
  return withFreshServer(client, (session) => bench(session, run, durationS));
});
