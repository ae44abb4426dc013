// Throughput and latency of transfers through the HTTP API, server in a child process on a
// database of its own. Two workloads bound the actor design: "hot" funnels every credit into
// one account (one mailbox serialises them), "uniform" spreads them over 10,000 accounts.
// Closed loop: each client sends its next request when the previous one is answered.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Pool } from 'undici';
import { createTestDatabase, type TestDatabase } from '../test/helpers/db.ts';
import { api, startServer, type Api, type ApiResponse, type ServerProcess } from '../test/helpers/server-process.ts';

// Read once: the bench has no config module of its own, and only the duration is tunable.
const settings = Object.freeze({
  measureSeconds: Number(process.env.BENCH_SECONDS ?? 15),
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
});
if (!Number.isFinite(settings.measureSeconds) || settings.measureSeconds <= 0) {
  throw new Error(`BENCH_SECONDS must be a positive number, got ${process.env.BENCH_SECONDS}`);
}

interface PhaseResult {
  workload: string;
  seconds: number;
  requests: number;
  settled: number;
  accepted: number;
  rejected: Map<string, number>;
  latenciesMs: Float64Array;
}

const ms = (ns: bigint): number => Number(ns) / 1e6;

/** Runs `fn` over `items` with at most `limit` in flight; setup only, so the first error aborts. */
async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Setup POST that must succeed: retries the retryable answers with the same key. */
async function mustPost(client: Api, path: string, body: unknown, want: number[]): Promise<ApiResponse> {
  const key = randomUUID();
  for (let attempt = 0; ; attempt++) {
    const res = await client.post(path, body, key);
    if (want.includes(res.status)) return res;
    if ((res.status !== 503 && res.status !== 409) || attempt >= 20) {
      throw new Error(`setup POST ${path} answered ${res.status}: ${JSON.stringify(res.body)}`);
    }
    await sleep(50 * (attempt + 1));
  }
}

/** `probe` replaces the transfer with another request (the HTTP ceiling); its 200 counts as ok. */
async function runPhase(workload: string, client: Api, pickPair: () => [string, string], probe?: () => Promise<number>): Promise<PhaseResult> {
  let measuring = false;
  let stopped = false;
  let requests = 0;
  let settled = 0;
  let accepted = 0;
  const rejected = new Map<string, number>();
  const latencies: number[] = [];

  const worker = async (): Promise<void> => {
    while (!stopped) {
      const [source, destination] = pickPair();
      const amount = String(1 + Math.floor(Math.random() * settings.maxAmountMinor));
      const inWindow = measuring;
      const t0 = process.hrtime.bigint();
      let outcome: string;
      try {
        if (probe) {
          const status = await probe();
          outcome = status === 200 ? '201' : String(status);
        } else {
        const res = await client.post(
          '/v1/transfers',
          { sourceAccountId: source, destinationAccountId: destination, amount, currency: 'USD' },
          randomUUID(),
        );
        outcome = String(res.status);
        }
      } catch (err) {
        outcome = `err:${(err as { code?: string }).code ?? 'unknown'}`;
      }
      const t1 = process.hrtime.bigint();
      // Only requests that started and ended inside the window count, at most one per
      // client is dropped at each edge.
      if (!inWindow || stopped) continue;
      requests++;
      if (outcome === '201' || outcome === '202') {
        if (outcome === '201') settled++;
        else accepted++;
        latencies.push(ms(t1 - t0));
      } else {
        rejected.set(outcome, (rejected.get(outcome) ?? 0) + 1);
      }
    }
  };

  const workers = Array.from({ length: settings.clients }, worker);
  await sleep(settings.warmupSeconds * 1000);
  const start = process.hrtime.bigint();
  measuring = true;
  await sleep(settings.measureSeconds * 1000);
  stopped = true;
  const seconds = ms(process.hrtime.bigint() - start) / 1000;
  await Promise.all(workers);

  const sorted = Float64Array.from(latencies).sort();
  return { workload, seconds, requests, settled, accepted, rejected, latenciesMs: sorted };
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const rate = (r: PhaseResult): number => (r.settled + r.accepted) / r.seconds;

function printTable(results: PhaseResult[]): void {
  const header = ['workload', 'requests', 'ok (201/202)', 'rejected', 'transfers/s', 'p50 ms', 'p99 ms'];
  const rows = results.map((r) => [
    r.workload,
    String(r.requests),
    `${r.settled + r.accepted} (${r.settled}/${r.accepted})`,
    r.rejected.size === 0 ? '0' : [...r.rejected].map(([s, n]) => `${s}:${n}`).join(' '),
    rate(r).toFixed(0),
    percentile(r.latenciesMs, 0.5).toFixed(2),
    percentile(r.latenciesMs, 0.99).toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
}

/** The ledger after the run: nothing in flight, the journal sums to zero, each transfer once. */
async function verifyLedger(databaseUrl: string, tenant: Api, hotDestination: string, funded: number): Promise<string[]> {
  const failures: string[] = [];
  const sql = new pg.Client({ connectionString: databaseUrl });
  await sql.connect();
  try {
    const deadline = Date.now() + settings.settleDeadlineMs;
    let inFlight: number;
    for (;;) {
      // `refused` is in flight too: the credit was refused and the money is on its way back.
      const { rows } = await sql.query<{ n: string }>(
        `SELECT count(*)::text AS n FROM transfers WHERE state IN ('debited', 'refused')`,
      );
      inFlight = Number(rows[0]!.n);
      if (inFlight === 0 || Date.now() > deadline) break;
      await sleep(250);
    }
    if (inFlight !== 0) failures.push(`${inFlight} transfers still in flight after ${settings.settleDeadlineMs} ms`);

    const total = (await sql.query<{ t: string }>(`SELECT coalesce(sum(amount), 0)::text AS t FROM journal`)).rows[0]!.t;
    if (total !== '0') failures.push(`sum of journal amounts is ${total}, not 0`);

    const doubled = (
      await sql.query<{ n: string }>(
        `SELECT count(*)::text AS n FROM (
           SELECT transfer_id FROM journal WHERE transfer_id IS NOT NULL GROUP BY transfer_id
           HAVING count(*) FILTER (WHERE amount < 0) <> 1 OR count(*) FILTER (WHERE amount > 0) <> 1) d`,
      )
    ).rows[0]!.n;
    if (doubled !== '0') failures.push(`${doubled} transfers without exactly one debit and one credit posting`);

    const customers = (
      await sql.query<{ t: string }>(
        `SELECT coalesce(sum(j.amount), 0)::text AS t FROM journal j JOIN accounts a ON a.id = j.account_id
          WHERE a.kind = 'customer'`,
      )
    ).rows[0]!.t;
    const expected = (settings.fundingMinor * BigInt(funded)).toString();
    if (customers !== expected) failures.push(`customer balances sum to ${customers}, deposits were ${expected}`);

    // The hottest account is where a lost or doubled credit would most likely show.
    const journalHot = (
      await sql.query<{ t: string }>(`SELECT coalesce(sum(amount), 0)::text AS t FROM journal WHERE account_id = $1`, [
        hotDestination,
      ])
    ).rows[0]!.t;
    const res = await tenant.get(`/v1/accounts/${hotDestination}`);
    if (res.status !== 200 || res.body.balance !== journalHot) {
      failures.push(`hot account: API says ${res.status} ${JSON.stringify(res.body?.balance)}, journal ${journalHot}`);
    }
  } finally {
    await sql.end();
  }
  return failures;
}

async function main(): Promise<number> {
  const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  let db: TestDatabase | undefined;
  let server: ServerProcess | undefined;
  let pool: Pool | undefined;
  let finished = false;
  try {
    db = await createTestDatabase('bench');
    server = await startServer({ databaseUrl: db.url, adminKey, env: { LOG_LEVEL: 'warn' } });
    const running = server;
    // A server that dies mid-run turns every later request into ECONNREFUSED; say why at once.
    void running.exited.then((code) => {
      if (!finished) console.error(`server exited during the bench (code ${String(code)}):\n${running.output()}`);
    });
    // One keep-alive connection per client, so no request queues behind another in undici.
    pool = new Pool(server.url, { connections: settings.clients, keepAliveTimeout: 60_000 });
    const admin = api(server.url, adminKey, { dispatcher: pool });
    console.log(
      `geopay bench: ${settings.clients} clients, warm-up ${settings.warmupSeconds} s, measure ${settings.measureSeconds} s, server ${server.url} (pid ${server.pid})`,
    );

    const setupStart = Date.now();
    const tenantRow = await mustPost(admin, '/v1/tenants', { name: 'bench' }, [201]);
    const keyRow = await mustPost(admin, `/v1/tenants/${tenantRow.body.id}/keys`, undefined, [201]);
    const tenant = api(server.url, keyRow.body.key, { dispatcher: pool });

    // The hot sources are the first 1,000 of the uniform accounts; the hot destination is
    // extra, so the uniform phase does not also land on it.
    const opened = await inParallel(Array.from({ length: settings.uniformAccounts + 1 }), settings.setupClients, () =>
      mustPost(tenant, '/v1/accounts', { currency: 'USD' }, [201]),
    );
    const accounts = opened.map((r) => r.body.id as string);
    const hotDestination = accounts.pop()!;
    const hotSources = accounts.slice(0, settings.hotSources);
    await inParallel(accounts, settings.setupClients, (accountId) =>
      mustPost(tenant, '/v1/deposits', { accountId, amount: String(settings.fundingMinor), currency: 'USD' }, [201, 202]),
    );
    console.log(
      `setup: ${accounts.length + 1} accounts opened, ${accounts.length} funded in ${((Date.now() - setupStart) / 1000).toFixed(1)} s`,
    );

    const pickFrom = (xs: readonly string[]): string => xs[Math.floor(Math.random() * xs.length)]!;
    const hot = await runPhase('hot', tenant, () => [pickFrom(hotSources), hotDestination]);
    const uniform = await runPhase('uniform', tenant, () => {
      const source = pickFrom(accounts);
      let destination = pickFrom(accounts);
      while (destination === source) destination = pickFrom(accounts);
      return [source, destination];
    });

    // The HTTP ceiling: the same server, client and concurrency on a route that does nothing.
    const ceiling = await runPhase('ceiling', tenant, () => ['', ''], async () => (await tenant.get('/healthz')).status);

    console.log('');
    printTable([hot, uniform, ceiling]);
    console.log(`\nhot/uniform transfers/s: ${(rate(hot) / rate(uniform)).toFixed(2)}`);
    console.log(`of the HTTP ceiling (GET /healthz, ${rate(ceiling).toFixed(0)}/s): hot ${(100 * rate(hot) / rate(ceiling)).toFixed(0)}%, uniform ${(100 * rate(uniform) / rate(ceiling)).toFixed(0)}%`);

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const metric = (n: string): number => Number(new RegExp(`^geopay_${n} (\\S+)$`, 'm').exec(metrics)?.[1] ?? Number.NaN);
    const statements = metric('commit_statements_total');
    const batches = metric('actor_batches_committed_total');
    console.log(`commits: ${batches} actor batches in ${statements} transactions (${(batches / statements).toFixed(1)} per transaction)`);

    const failures = await verifyLedger(db.url, tenant, hotDestination, accounts.length);
    if ((hot.settled + hot.accepted) === 0 || (uniform.settled + uniform.accepted) === 0) {
      failures.push('a workload completed no transfer');
    }
    for (const f of failures) console.log(`  ${f}`);
    console.log(failures.length === 0 ? 'ledger: PASS' : 'ledger: FAIL');
    return failures.length === 0 ? 0 : 1;
  } finally {
    finished = true;
    await pool?.destroy();
    await server?.kill();
    await db?.drop();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
