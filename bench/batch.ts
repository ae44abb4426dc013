// Transfers per second through POST /v1/transfers/batch on the real PostgreSQL, uniform over
// 2,000 accounts and with 90% of the items crediting one hot account, against single
// POST /v1/transfers at 64 clients measured in the same run. Ends by checking the ledger.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Pool } from 'undici';
import { createTestDatabase } from '../test/helpers/db.ts';
import type { TestDatabase } from '../test/helpers/db.ts';
import { api, startServer } from '../test/helpers/server-process.ts';
import type { Api, ServerProcess } from '../test/helpers/server-process.ts';

const settings = Object.freeze({
  seconds: Number(process.env.BENCH_SECONDS ?? 15),
  accounts: 2_000,
  batchSize: 1_000,
  /** Batches in flight at once: enough to keep the node's writer busy. */
  batchClients: 4,
  singleClients: 64,
  hotShare: 0.9,
});

interface Phase { name: string; items: number; ok: number; seconds: number; latencies: number[]; statements: number }

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const pct = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
};

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(new RegExp(`^geopay_${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
}

async function run(name: string, url: string, clients: number, once: () => Promise<{ items: number; ok: number }>): Promise<Phase> {
  let stop = false;
  let items = 0;
  let ok = 0;
  const latencies: number[] = [];
  const before = await metric(url, 'commit_statements_total');
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (!stop) {
      const s = performance.now();
      const r = await once();
      latencies.push(performance.now() - s);
      items += r.items;
      ok += r.ok;
    }
  }).concat([sleep(settings.seconds * 1000).then(() => { stop = true; })]));
  const seconds = (performance.now() - t0) / 1000;
  return { name, items, ok, seconds, latencies, statements: (await metric(url, 'commit_statements_total')) - before };
}

async function main(): Promise<number> {
  const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  let db: TestDatabase | undefined;
  let server: ServerProcess | undefined;
  let pool: Pool | undefined;
  try {
    db = await createTestDatabase('bench_batch');
    server = await startServer({ databaseUrl: db.url, adminKey, env: { LOG_LEVEL: 'warn' } });
    pool = new Pool(server.url, { connections: settings.singleClients, keepAliveTimeout: 60_000, bodyTimeout: 120_000, headersTimeout: 120_000 });
    const admin = api(server.url, adminKey, { dispatcher: pool });
    const tenant = await admin.post('/v1/tenants', { name: 'bench' });
    const key = await admin.post(`/v1/tenants/${tenant.body.id}/keys`);
    const c: Api = api(server.url, key.body.key, { dispatcher: pool });
    console.log(`geopay bench:batch: batches of ${settings.batchSize}, ${settings.batchClients} in flight, ${settings.seconds} s per phase, server ${server.url}`);

    const accounts: string[] = [];
    for (let i = 0; i < settings.accounts; i += 100) {
      const opened = await Promise.all(Array.from({ length: Math.min(100, settings.accounts - i) }, () => c.post('/v1/accounts', { currency: 'USD' })));
      accounts.push(...opened.map((r) => r.body.id as string));
    }
    const hot = (await c.post('/v1/accounts', { currency: 'USD' })).body.id as string;
    // Fund through the batch API itself: deposits are not batchable, so fund a treasury then fan out.
    const treasury = (await c.post('/v1/accounts', { currency: 'USD' })).body.id as string;
    await c.post('/v1/deposits', { accountId: treasury, amount: '9000000000000000', currency: 'USD' });
    for (let i = 0; i < accounts.length; i += settings.batchSize) {
      const items = accounts.slice(i, i + settings.batchSize).map((a) => ({ sourceAccountId: treasury, destinationAccountId: a, amount: '1000000000', currency: 'USD' }));
      const r = await c.post('/v1/transfers/batch', { items });
      if (r.status !== 200) throw new Error(`funding batch: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
    }
    await sleep(500);

    const batchOnce = (hotShare: number) => async () => {
      const items = Array.from({ length: settings.batchSize }, () => {
        const src = pick(accounts);
        let dst = Math.random() < hotShare ? hot : pick(accounts);
        while (dst === src) dst = pick(accounts);
        return { sourceAccountId: src, destinationAccountId: dst, amount: String(1 + Math.floor(Math.random() * 100)), currency: 'USD' };
      });
      const r = await c.post('/v1/transfers/batch', { items });
      const ok = r.status === 200 ? (r.body.items as { status: number }[]).filter((x) => x.status === 201 || x.status === 202).length : 0;
      return { items: items.length, ok };
    };
    const singleOnce = async () => {
      const src = pick(accounts);
      let dst = pick(accounts);
      while (dst === src) dst = pick(accounts);
      const r = await c.post('/v1/transfers', { sourceAccountId: src, destinationAccountId: dst, amount: '5', currency: 'USD' }, randomUUID());
      return { items: 1, ok: r.status === 201 || r.status === 202 ? 1 : 0 };
    };

    const phases = [
      await run('batch uniform', server.url, settings.batchClients, batchOnce(0)),
      await run('batch hot 90%', server.url, settings.batchClients, batchOnce(settings.hotShare)),
      await run('single uniform', server.url, settings.singleClients, singleOnce),
    ];
    console.log('');
    console.log('phase           items     ok   transfers/s  request p50 ms  request p99 ms  items per transaction');
    for (const p of phases) {
      console.log(`${p.name.padEnd(14)} ${String(p.items).padStart(6)} ${String(p.ok).padStart(6)} ${(p.ok / p.seconds).toFixed(0).padStart(13)} ${pct(p.latencies, 0.5).toFixed(1).padStart(15)} ${pct(p.latencies, 0.99).toFixed(1).padStart(15)} ${(p.ok / p.statements).toFixed(1).padStart(22)}`);
    }
    const single = phases[2]!.ok / phases[2]!.seconds;
    console.log(`\nbatch over single POST /v1/transfers: uniform ${(phases[0]!.ok / phases[0]!.seconds / single).toFixed(1)}x, hot ${(phases[1]!.ok / phases[1]!.seconds / single).toFixed(1)}x`);

    // The ledger once nothing is in flight.
    const check = new pg.Client({ connectionString: db.url });
    await check.connect();
    try {
      let inFlight = 1n;
      for (let i = 0; i < 120 && inFlight > 0n; i++) {
        inFlight = BigInt((await check.query("SELECT count(*) AS n FROM transfers WHERE state IN ('debited', 'refused')")).rows[0].n);
        if (inFlight > 0n) await sleep(500);
      }
      const sum = BigInt((await check.query('SELECT coalesce(sum(amount), 0)::text AS s FROM journal')).rows[0].s);
      const twice = (await check.query('SELECT count(*) AS n FROM (SELECT transfer_id, kind FROM journal WHERE transfer_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) x')).rows[0].n;
      const okLedger = inFlight === 0n && sum === 0n && Number(twice) === 0;
      console.log(`ledger: in flight ${inFlight}, sum ${sum}, legs applied twice ${twice}: ${okLedger ? 'PASS' : 'FAIL'}`);
      return okLedger ? 0 : 1;
    } finally {
      await check.end();
    }
  } finally {
    await pool?.destroy();
    await server?.kill();
    await db?.drop();
  }
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
