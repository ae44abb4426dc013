// The load test end to end, as a user runs it (the CLI in a child process): a short open-loop
// run against a server it starts on a fresh database ends with the checker passing and the
// database dropped; --url mode against a server of ours; a failing check exits non-zero.
// Plus the pure parts that make runs reproducible: parsers, the rate schedule, the workload.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RequestRecord } from '../bench/lib/request-log.ts';
import { parseMix, parseSkew, parseSpike, RateSchedule, UsageError } from '../bench/lib/options.ts';
import type { RunReport } from '../bench/lib/report.ts';
import { Workload, type AccountSet } from '../bench/lib/workload.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { startServer, type ServerProcess } from './helpers/server-process.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const adminUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

function loadtest(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'bench/loadtest.ts', ...args], { cwd: root, timeout: 60_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
}

async function records(file: string): Promise<RequestRecord[]> {
  return (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as RequestRecord);
}

let out: string;
let db: TestDatabase;
let empty: TestDatabase;
let server: ServerProcess;
const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;

beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'geopay-loadtest-test-'));
  db = await createTestDatabase('loadtest_url');
  empty = await createTestDatabase('loadtest_empty');
  // geopay's default per-tenant limit (100 writes/s): the load test must lift it for its tenant.
  server = await startServer({ databaseUrl: db.url, adminKey, env: { RATE_LIMIT_WRITES_PER_S: '100', RATE_LIMIT_READS_PER_S: '100' } });
}, 60_000);

afterAll(async () => {
  await server?.kill();
  await db?.drop();
  await empty?.drop();
  await rm(out, { recursive: true, force: true });
});

describe('npm run loadtest', () => {
  it('drives holds (capture in part, in full, or void) and refunds, and the ledger checks out', async () => {
    const dir = join(out, 'holds');
    const r = await loadtest(['--start', 'postgres', '--rate', '60', '--duration', '3', '--accounts', '100', '--seed', '9',
      '--mix', 'hold=1,refund=1', '--out', dir, '--no-png']);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/checker \(geopay\): PASS/);
    const log = (await records(join(dir, 'requests.ndjson'))).filter((l) => l.phase === 'uniform');
    const ok = (op: string) => log.filter((l) => l.op === op && (l.status === 201 || l.status === 202 || l.status === 200)).length;
    expect(ok('hold')).toBeGreaterThan(20);
    expect(ok('capture')).toBeGreaterThan(5);
    expect(ok('void')).toBeGreaterThan(0);
    expect(ok('transfer')).toBeGreaterThan(20);
    expect(ok('refund')).toBeGreaterThan(20);
  });

  it('runs 5 s at 100/s on a server it starts, and the ledger checks out', async () => {
    const dir = join(out, 'started');
    const r = await loadtest(['--start', 'postgres', '--rate', '100', '--duration', '5', '--accounts', '200', '--seed', '42', '--out', dir, '--no-png']);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/checker \(geopay\): PASS/);

    const report = JSON.parse(await readFile(join(dir, 'results.json'), 'utf8')) as RunReport;
    const p = report.phases[0]!;
    expect(p.counts.sent).toBe(500);
    expect(p.counts.ok + Object.values(p.counts.rejected).reduce((a, b) => a + b, 0)).toBe(500);
    expect(p.counts.errors).toEqual({});
    expect(p.throughputPerS).toBeGreaterThan(85);
    expect(p.throughputPerS).toBeLessThan(105);
    expect(p.series.length).toBeGreaterThanOrEqual(4);
    expect(p.latency.count).toBe(p.counts.ok);
    expect(report.checks).toHaveLength(1);
    expect(report.checks[0]!.ok).toBe(true);
    expect(report.settings.seed).toBe(42);

    // The log has every request: setup (tenant, key, 201 accounts, 200 deposits) and the 500.
    const log = await records(join(dir, 'requests.ndjson'));
    const measured = log.filter((l) => l.phase === 'uniform');
    expect(new Set(measured.map((l) => l.key)).size).toBe(500);
    expect(log.filter((l) => l.phase === 'setup' && l.attempt === 1)).toHaveLength(2 + 201 + 200);
    expect(report.checks[0]!.stats.acknowledgedTransfers).toBe(200 + p.counts.ok);
    expect(log.every((l) => typeof l.key === 'string' && l.body !== undefined && 'answer' in l)).toBe(true);

    // The database it started on is gone.
    const name = /PostgreSQL database (\S+) \(dropped at the end\)/.exec(r.stdout)?.[1];
    expect(name).toBeDefined();
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    try {
      expect((await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount).toBe(0);
    } finally {
      await admin.end();
    }
  }, 60_000);

  it('drives a running server by --url, closed loop and hot, and checks it by --database-url', async () => {
    const dir = join(out, 'url');
    const r = await loadtest([
      '--url', server.url, '--admin-key', adminKey, '--database-url', db.url, '--concurrency', '8', '--duration', '3',
      '--accounts', '100', '--skew', 'hot:0.9', '--currencies', 'USD,EUR', '--out', dir, '--no-png',
    ]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    const report = JSON.parse(await readFile(join(dir, 'results.json'), 'utf8')) as RunReport;
    expect(report.checks[0]!.ok).toBe(true);
    expect(r.stdout).toContain('tenant rate limits lifted');
    // Lifted, not hit: no attempt of the run was answered 429 (how many went through is the
    // machine's speed, a figure of the run, not something this test asserts).
    expect(report.phases[0]!.counts.ok).toBeGreaterThan(0);
    expect(report.phases[0]!.counts.errors).toEqual({});
    const log = await records(join(dir, 'requests.ndjson'));
    expect(log.filter((l) => l.status === 429)).toEqual([]);
    // hot:0.9: most transfers of the window credit one of the two merchants.
    const transfers = log.filter((l) => l.phase === 'hot:0.9' && l.op === 'transfer' && l.attempt === 1);
    const dests = new Map<string, number>();
    for (const t of transfers) {
      const d = (t.body as { destinationAccountId: string }).destinationAccountId;
      dests.set(d, (dests.get(d) ?? 0) + 1);
    }
    const top2 = [...dests.values()].sort((a, b) => b - a).slice(0, 2).reduce((a, b) => a + b, 0);
    expect(top2 / transfers.length).toBeGreaterThan(0.8);
  }, 60_000);

  it('exits non-zero when the ledger check fails', async () => {
    // The load goes to the server's database; the checker is pointed at an empty one.
    const r = await loadtest([
      '--url', server.url, '--admin-key', adminKey, '--database-url', empty.url, '--rate', '50', '--duration', '1',
      '--accounts', '10', '--out', join(out, 'failing'), '--no-png', '--settle-ms', '0',
    ]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(1);
    expect(r.stdout).toMatch(/FAIL/);
    expect(r.stdout).toContain('neither geopay (journal) nor baseline (baseline_transfers) tables');
  }, 60_000);

  it('refuses contradictory options with usage and exit code 2', async () => {
    const r = await loadtest(['--rate', '10', '--concurrency', '4']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('exclude each other');
  }, 30_000);
});

describe('reproducible workloads', () => {
  const accounts: AccountSet = {
    byCurrency: new Map([['USD', Array.from({ length: 50 }, (_, i) => `usd${i}`)], ['EUR', Array.from({ length: 30 }, (_, i) => `eur${i}`)]]),
    merchants: new Map([['USD', 'usd-merchant'], ['EUR', 'eur-merchant']]),
  };
  const spec = {
    accounts: 80, currencies: ['USD', 'EUR'], mix: parseMix('transfer=80,deposit=10,withdraw=10'), skew: parseSkew('zipf:1.1'),
    maxAmount: 5000, fundingMinor: 0n, overdraftMinor: 0n,
  };
  const stream = (seed: number, s = spec) => {
    const w = new Workload(s, accounts, seed);
    return Array.from({ length: 2000 }, () => w.next());
  };

  it('one seed gives one stream of operations; another seed another', () => {
    expect(stream(7)).toEqual(stream(7));
    expect(stream(8)).not.toEqual(stream(7));
  });

  it('honours the mix, the currencies and the skew', () => {
    const ops = stream(7);
    const share = (k: string) => ops.filter((o) => o.kind === k).length / ops.length;
    expect(share('transfer')).toBeGreaterThan(0.75);
    expect(share('transfer')).toBeLessThan(0.85);
    for (const o of ops.filter((x) => x.kind === 'transfer')) {
      expect(o.body.sourceAccountId).not.toBe(o.body.destinationAccountId);
      expect(String(o.body.sourceAccountId).slice(0, 3)).toBe(String(o.body.currency).toLowerCase());
      expect(String(o.body.destinationAccountId).slice(0, 3)).toBe(String(o.body.currency).toLowerCase());
    }
    // zipf:1.1 over 50 accounts: the most used account carries far more than 1/50.
    const counts = new Map<string, number>();
    for (const o of ops) {
      const a = String(o.body.accountId ?? o.body.sourceAccountId);
      counts.set(a, (counts.get(a) ?? 0) + 1);
    }
    expect(Math.max(...counts.values()) / ops.length).toBeGreaterThan(0.08);
    const hot = stream(7, { ...spec, mix: parseMix('transfer=1'), skew: parseSkew('hot:0.9') });
    const toMerchant = hot.filter((o) => String(o.body.destinationAccountId ?? '').endsWith('merchant')).length / hot.length;
    expect(toMerchant).toBeGreaterThan(0.87);
    expect(toMerchant).toBeLessThan(0.93);
  });

  it('schedules an open loop by time, spike included', () => {
    const s = new RateSchedule(100, parseSpike('10x@2s+1s'), 5);
    // 2 s at 100/s, 1 s at 1000/s, 2 s at 100/s.
    expect(s.total).toBe(200 + 1000 + 200);
    expect(s.timeOf(0)).toBe(0);
    expect(s.timeOf(199)).toBeCloseTo(1.99, 9);
    expect(s.timeOf(200)).toBeCloseTo(2, 9);
    expect(s.timeOf(1199)).toBeCloseTo(2.999, 9);
    expect(s.timeOf(1200)).toBeCloseTo(3, 9);
    expect(s.rateAt(2.5)).toBe(1000);
  });

  it('rejects malformed options with the offending text', () => {
    expect(() => parseMix('transfer=80,payout=20')).toThrow(UsageError);
    expect(() => parseSkew('hot:1.5')).toThrow(/hot fraction/);
    expect(() => parseSpike('10x@10s')).toThrow(/FACTORx@STARTs\+LENGTHs/);
  });
});
