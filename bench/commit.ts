// What one commit statement costs (`npm run bench:commit`): the write sets of transfers' debits
// (a posting, the transfer row, its idempotency key, its event) committed through commitSets on
// one connection of a fresh database, k write sets per statement, under the pools' plan mode
// (force_custom_plan: planned with each execution's arrays) and, as the comparison,
// force_generic_plan (planned once for the connection). Prints ms and node CPU per statement
// and per write set. synchronous_commit is off, so the figures are the statement's CPU and
// round trip, not the disk's flush.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import { makeAccountId, makeTransferId, uuidv7Hex, type AccountId, type Region } from '../src/domain/ids.ts';
import type { Currency } from '../src/domain/money.ts';
import { createPool, migrate, type Pool } from '../src/persistence/db.ts';
import { commitSets, emptyWriteSet, type WriteSet } from '../src/persistence/journal.ts';
import { runMain, withOptions } from './lib/main.ts';
import { parsePositiveInt, UsageError } from './lib/options.ts';
import { fixed, formatTable } from './lib/table.ts';

const USAGE = `usage: npm run bench:commit -- [--statements N]
  --statements N   statements timed per batch size and plan mode (default 200)
DATABASE_URL's server is used (default postgres://postgres@127.0.0.1:5432/postgres); the bench makes and drops a database of its own.
`;

const settings = Object.freeze({ accounts: 2_000, sizes: [1, 2, 4, 16, 64], warmup: 10, modes: ['force_custom_plan', 'force_generic_plan'] });

const logger = pino({ level: 'warn' });
const SHARD = 'eu/0';
const EU = 'eu' as Region;
const USD = 'USD' as Currency;

function parseOptions(argv: string[]): { statements: number } | 'help' {
  let v;
  try {
    v = parseArgs({ args: argv, options: { statements: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (v.help) return 'help';
  return { statements: v.statements === undefined ? 200 : parsePositiveInt(v.statements, '--statements') };
}

/** The accounts, opened by one commit each 200, and the next seq of each. */
async function openAccounts(pool: Pool): Promise<Map<AccountId, number>> {
  const seq = new Map<AccountId, number>();
  for (let i = 0; i < settings.accounts; i += 200) {
    const ws = emptyWriteSet(SHARD, 1n, 'bench');
    for (let j = i; j < Math.min(i + 200, settings.accounts); j++) {
      const id = makeAccountId(EU, randomBytes(16).toString('hex'));
      ws.accounts.push({ id, tenantId: null, kind: 'customer', currency: USD, region: EU, shard: SHARD, overdraftLimit: 1_000_000n, metadata: {}, at: new Date().toISOString() });
      seq.set(id, 1);
    }
    await commitSets(pool, [ws]);
  }
  return seq;
}

/** A transfer's debit as its source's actor commits it. */
function debit(seq: Map<AccountId, number>, src: AccountId, dst: AccountId): WriteSet {
  const ws = emptyWriteSet(SHARD, 1n, 'bench');
  const s = seq.get(src)!;
  seq.set(src, s + 1);
  const id = makeTransferId(EU, uuidv7Hex(Date.now(), randomBytes(10)));
  const at = new Date().toISOString();
  ws.journal.push({ accountId: src, seq: s, kind: 'debit', transferId: id, amount: -1n, balanceAfter: -BigInt(s), holdId: null, heldDelta: 0n, heldAfter: 0n, at });
  ws.newTransfers.push({ id, tenantId: null, kind: 'transfer', sourceId: src, destinationId: dst, amount: 1n, currency: USD, metadata: null, at, holdId: null, refundOf: null });
  ws.idempotency.push({ tenantId: 'bench', key: randomBytes(12).toString('hex'), requestHash: 'h', resourceId: id, statusCode: null, response: null });
  ws.events.push({ accountId: src, tenantId: null, type: 'transfer.debited', seq: s, payload: { of: 'transfer', id }, at });
  return ws;
}

/** k distinct sources, each one write set. */
function batch(seq: Map<AccountId, number>, ids: AccountId[], k: number): WriteSet[] {
  const picked = new Set<AccountId>();
  while (picked.size < k) picked.add(ids[Math.floor(Math.random() * ids.length)]!);
  return [...picked].map((src) => debit(seq, src, ids[Math.floor(Math.random() * ids.length)]!));
}

async function measureMode(serverUrl: string, mode: string, statements: number): Promise<string[][]> {
  const db = `geopay_bench_commit_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${db}`);
  const url = new URL(serverUrl);
  url.pathname = `/${db}`;
  const pool = createPool({ connectionString: url.toString(), max: 1, statementTimeoutMs: 30_000, logger });
  try {
    await migrate(pool, logger);
    await pool.query(`SET plan_cache_mode = ${mode}`);
    await pool.query('SET synchronous_commit = off');
    await pool.query(`INSERT INTO shards (id, region, bucket, epoch, owner) VALUES ($1, 'eu', 0, 1, 'bench')`, [SHARD]);
    const seq = await openAccounts(pool);
    const ids = [...seq.keys()];
    const rows: string[][] = [];
    for (const k of settings.sizes) {
      for (let i = 0; i < settings.warmup; i++) await commitSets(pool, batch(seq, ids, k));
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      for (let i = 0; i < statements; i++) await commitSets(pool, batch(seq, ids, k));
      const ms = (performance.now() - t0) / statements;
      const cpu = process.cpuUsage(c0);
      const cpuMs = (cpu.user + cpu.system) / 1000 / statements;
      rows.push([mode, String(k), fixed(ms, 2), fixed(ms / k, 3), fixed(cpuMs, 2), fixed((1000 * k) / ms, 0)]);
    }
    return rows;
  } finally {
    await pool.end();
    await admin.query(`DROP DATABASE ${db} WITH (FORCE)`);
    await admin.end();
  }
}

async function main(opts: { statements: number }): Promise<number> {
  const serverUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const rows: string[][] = [];
  for (const mode of settings.modes) rows.push(...await measureMode(serverUrl, mode, opts.statements));
  console.log(`commit statements of transfers' debits, one connection, ${settings.accounts} accounts, ${opts.statements} statements per row (node CPU includes building the write sets):`);
  console.log(formatTable(['plan mode', 'write sets', 'ms/statement', 'ms/write set', 'node CPU ms/statement', 'write sets/s'], rows, { labelColumns: 2 }));
  return 0;
}

runMain(() => withOptions(USAGE, () => parseOptions(process.argv.slice(2)), main));
