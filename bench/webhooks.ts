// Webhook deliveries per second to a local receiver, on a fresh server on the local PostgreSQL:
// transfers at 32 clients with no endpoint (the baseline), then the same load with one
// endpoint taking `transfer.settled`, each delivery verified by the `standardwebhooks` package.
// Prints transfers/s of both (what the outbox feed and the dispatcher cost the payments),
// deliveries/s and the latency from the event's commit to its arrival at the receiver.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { runBench } from './lib/main.ts';
import { anyTwo, measurePhase, transferJobs, type PhaseCommon } from './lib/phases.ts';
import { progress } from './lib/progress.ts';
import { withFreshServer, type Session } from './lib/session.ts';
import { setup } from './lib/setup.ts';
import { newHistogram, summarize } from './lib/stats.ts';
import { rateRatio } from './lib/summary.ts';
import { fixed, formatTable } from './lib/table.ts';

const USAGE = `usage: npm run bench:webhooks -- [--duration S]
  --duration S   measured seconds per phase (default: BENCH_SECONDS, else 10)
`;

const settings = Object.freeze({
  accounts: 1_000,
  clients: 32,
  fundingMinor: 1_000_000_000n,
  /** Deliveries that stop arriving for this long are all there is. */
  quietMs: 3_000,
  drainDeadlineMs: 120_000,
});

/** The receiver: verifies each delivery, answers 200, and keeps when each arrived and how late. */
async function startReceiver(secret: () => string) {
  const latency = newHistogram();
  const stats = { delivered: 0, unverified: 0, firstAt: 0, lastAt: 0 };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      const now = Date.now();
      try {
        const payload = new Webhook(secret()).verify(body, req.headers as Record<string, string>) as { timestamp: string };
        stats.delivered++;
        stats.firstAt ||= now;
        stats.lastAt = now;
        latency.recordValue(Math.max(1, Math.round((now - Date.parse(payload.timestamp)) * 1000)));
      } catch {
        stats.unverified++;
      }
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, stats, latency, close: () => new Promise((r) => server.close(r)) };
}

async function bench({ target, client }: Session, run: string, durationS: number): Promise<number> {
  console.log(`geopay bench:webhooks: ${settings.clients} clients, ${durationS} s per phase, server ${target.url}`);
  const s = await setup(client, {
    adminKey: target.adminKey, run, concurrency: settings.clients, liftRateLimits: true,
    spec: { accounts: settings.accounts, currencies: ['USD'], fundingMinor: settings.fundingMinor, overdraftMinor: 0n },
  });
  const common: PhaseCommon = { engine: 'geopay', load: { mode: 'closed', concurrency: settings.clients }, durationS, warmupS: 1, maxInFlight: settings.clients, progress: progress() };
  const jobs = () => transferJobs({ clients: [client], tenantId: s.tenantId, tenantKey: s.tenantKey, currency: 'USD', maxAmountMinor: 5, pickPair: anyTwo(s.accounts.byCurrency.get('USD')!) });
  const baseline = await measurePhase(common, 'transfers, no endpoint', jobs());

  let secret = '';
  const receiver = await startReceiver(() => secret);
  try {
    const made = await client.post({
      op: 'webhook endpoint', path: '/v1/webhook-endpoints', body: { url: receiver.url, eventTypes: ['transfer.settled'] },
      key: `${run}-endpoint`, bearer: s.tenantKey, tenant: s.tenantId, phase: 'setup',
    });
    if (made.status !== 201) throw new Error(`endpoint: ${made.status} ${JSON.stringify(made.answer)}`);
    secret = (made.answer as { secret: string }).secret;
    const started = Date.now();
    const withHook = await measurePhase(common, 'transfers, one endpoint', jobs());
    // The deliveries of the last transfers come after the phase: wait until they stop.
    const deadline = Date.now() + settings.drainDeadlineMs;
    let last = -1;
    while (receiver.stats.delivered !== last && Date.now() < deadline) {
      last = receiver.stats.delivered;
      await new Promise((r) => setTimeout(r, settings.quietMs));
    }
    const { stats } = receiver;
    const spanS = (stats.lastAt - Math.max(started, stats.firstAt)) / 1000;
    const lat = summarize(receiver.latency);
    console.log(`\n${formatTable(['phase', 'transfers ok', 'transfers/s', 'p50 ms', 'p99 ms'], [baseline, withHook].map((p) => [
      p.workload, String(p.counts.ok), fixed(p.throughputPerS, 0), fixed(p.latency.p50Ms, 1), fixed(p.latency.p99Ms, 1),
    ]))}`);
    console.log(`\nwebhook deliveries: ${stats.delivered} verified (${stats.unverified} not), ${fixed(stats.delivered / Math.max(spanS, 0.001), 0)}/s over ${fixed(spanS, 1)} s; ` +
      `commit to receiver p50 ${fixed(lat.p50Ms, 0)} ms, p99 ${fixed(lat.p99Ms, 0)} ms, max ${fixed(lat.maxMs, 0)} ms`);
    console.log(`transfers/s with one endpoint over none: ${rateRatio(withHook, baseline).toFixed(2)}x`);
    // Every settled transfer of the phase has its delivery (those answered after the window included).
    return stats.unverified === 0 && stats.delivered >= withHook.counts.ok ? 0 : 1;
  } finally {
    await receiver.close();
  }
}

runBench(USAGE, 10, (durationS) => {
  const run = `hooks${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  const client = { connections: settings.clients, timeoutMs: 30_000, retries: 0, run };
  return withFreshServer(client, (session) => bench(session, run, durationS), { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_POLL_MS: '50' });
});
