// The cross-database checker against real region databases: eu and us, each migrated, each
// holding its own accounts and journal, with a deposit, a settled eu -> us transfer (debit in
// eu, credit in us, row in eu) and one in flight, written by SQL the way a region writes them.
// The ledger passes; each case plants one fault in a transaction rolled back after the check,
// and the checker must fail naming the row.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkRegions, parseRegionUrls, type CheckResult } from '../bench/checker.ts';
import type { RequestRecord } from '../bench/lib/request-log.ts';
import { migrate } from '../src/persistence/db.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

const REGIONS = ['eu', 'us'] as const;
type Region = (typeof REGIONS)[number];
type Clients = Record<Region, pg.Client>;

const hex = (): string => randomBytes(16).toString('hex');
const TENANT = `ten_${hex()}`;
const alice = `acc_eu_${hex()}`;
const bob = `acc_us_${hex()}`;
const deposit = `tr_eu_${hex()}`;
const settled = `tr_eu_${hex()}`;
const inFlight = `tr_eu_${hex()}`;

const dbs: Partial<Record<Region, TestDatabase>> = {};
const clients = {} as Clients;
const log: RequestRecord[] = [];

async function account(c: pg.Client, id: string, region: Region, kind = 'customer'): Promise<void> {
  await c.query(
    `INSERT INTO accounts (id, tenant_id, kind, currency, region, shard, overdraft_limit, created_at)
     VALUES ($1, $2, $3, 'USD', $4, $5, 0, now())`, [id, kind === 'customer' ? TENANT : null, kind, region, `${region}/0`]);
}

async function posting(c: pg.Client, p: { account: string; seq: number; kind: string; transfer?: string; amount: number; after: number }): Promise<void> {
  await c.query(
    `INSERT INTO journal (account_id, seq, kind, transfer_id, amount, balance_after, epoch, node_id, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, 1, 'node-1', now())`, [p.account, p.seq, p.kind, p.transfer ?? null, p.amount, p.after]);
}

/** A transfer row in `c`'s database, with the key that claimed it. */
async function transfer(c: pg.Client, id: string, kind: string, from: string, to: string, amount: number, state: string): Promise<void> {
  await c.query(
    `INSERT INTO transfers (id, tenant_id, kind, source_id, destination_id, amount, currency, state, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, 'USD', $7, now(), now())`, [id, TENANT, kind, from, to, amount, state]);
  await c.query("INSERT INTO idempotency_keys (tenant_id, key, request_hash, resource_id) VALUES ($1, $2, 'x', $3)", [TENANT, `key-${id}`, id]);
}

function acknowledged(id: string, op: string, body: Record<string, unknown>, state: string): RequestRecord {
  return {
    ts: new Date().toISOString(), run: 'checker-regions', phase: 'test', engine: 'geopay', tenant: TENANT, op, method: 'POST', path: `/v1/${op}s`,
    key: `key-${id}`, body, attempt: 1, status: state === 'settled' ? 201 : 202, answer: { id, state }, ms: 0,
  };
}

/** eu: ext_eu_USD deposits 1000 to alice; alice pays bob (us) 300, settled, and 100, in flight. */
async function writeLedger({ eu, us }: Clients): Promise<void> {
  for (const [region, c] of [['eu', eu], ['us', us]] as const) {
    await c.query("INSERT INTO shards (id, region, bucket, epoch) VALUES ($1, $2, 0, 1)", [`${region}/0`, region]);
  }
  await account(eu, 'ext_eu_USD', 'eu', 'external');
  await account(eu, alice, 'eu');
  await account(us, bob, 'us');
  await posting(eu, { account: 'ext_eu_USD', seq: 1, kind: 'open', amount: 0, after: 0 });
  await posting(eu, { account: 'ext_eu_USD', seq: 2, kind: 'debit', transfer: deposit, amount: -1000, after: -1000 });
  await posting(eu, { account: alice, seq: 1, kind: 'open', amount: 0, after: 0 });
  await posting(eu, { account: alice, seq: 2, kind: 'credit', transfer: deposit, amount: 1000, after: 1000 });
  await transfer(eu, deposit, 'deposit', 'ext_eu_USD', alice, 1000, 'settled');
  await posting(eu, { account: alice, seq: 3, kind: 'debit', transfer: settled, amount: -300, after: 700 });
  await transfer(eu, settled, 'transfer', alice, bob, 300, 'settled');
  await posting(us, { account: bob, seq: 1, kind: 'open', amount: 0, after: 0 });
  await posting(us, { account: bob, seq: 2, kind: 'credit', transfer: settled, amount: 300, after: 300 });
  await posting(eu, { account: alice, seq: 4, kind: 'debit', transfer: inFlight, amount: -100, after: 600 });
  await transfer(eu, inFlight, 'transfer', alice, bob, 100, 'debited');
  log.push(
    acknowledged(deposit, 'deposit', { accountId: alice, amount: '1000', currency: 'USD' }, 'settled'),
    acknowledged(settled, 'transfer', { sourceAccountId: alice, destinationAccountId: bob, amount: '300', currency: 'USD' }, 'debited'),
    acknowledged(inFlight, 'transfer', { sourceAccountId: alice, destinationAccountId: bob, amount: '100', currency: 'USD' }, 'debited'),
  );
}

/** Runs `plant` and the checker with every database in a transaction, then rolls them all back. */
async function planted(plant: (c: Clients) => Promise<void>, requests: RequestRecord[] = log): Promise<CheckResult> {
  for (const c of Object.values(clients)) await c.query('BEGIN');
  try {
    await plant(clients);
    const r = await checkRegions(clients, { requests });
    if (process.env.SHOW_FAILURES) console.log(r.failures.join('\n'));
    return r;
  } finally {
    for (const c of Object.values(clients)) await c.query('ROLLBACK');
  }
}

const naming = (res: CheckResult, ...parts: string[]): string[] => res.failures.filter((f) => parts.every((p) => f.includes(p)));

beforeAll(async () => {
  const logger = pino({ level: 'silent' });
  for (const region of REGIONS) {
    const db = await createTestDatabase(`checker_regions_${region}`);
    dbs[region] = db;
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      await migrate(pool, logger);
    } finally {
      await pool.end();
    }
    clients[region] = new pg.Client({ connectionString: db.url });
    await clients[region].connect();
  }
  await writeLedger(clients);
}, 60_000);

afterAll(async () => {
  for (const c of Object.values(clients)) await c?.end();
  for (const db of Object.values(dbs)) await db?.drop();
});

describe('checker across region databases', () => {
  it('passes a settled cross-region transfer and one in flight, counting the money in flight', async () => {
    const res = await checkRegions(clients, { requests: log });
    expect(res.failures).toEqual([]);
    expect(res.ok).toBe(true);
    expect(res.stats).toMatchObject({ regions: 2, inFlight: 1, creditedAwaitingOutcome: 0, transfers_settled: 2, transfers_debited: 1, acknowledgedTransfers: 3 });
    expect(res.stats.postings).toBe(8);
  });

  it('passes a credit landed in us while eu still waits for the outcome, and counts it arrived, not in flight', async () => {
    const res = await planted(async ({ us }) => {
      await posting(us, { account: bob, seq: 3, kind: 'credit', transfer: inFlight, amount: 100, after: 400 });
    });
    expect(res.failures).toEqual([]);
    expect(res.stats).toMatchObject({ inFlight: 0, creditedAwaitingOutcome: 1 });
  });

  it('fails when the money in flight is not counted: a debited transfer marked settled with no credit anywhere', async () => {
    const res = await planted(async ({ eu }) => {
      await eu.query("UPDATE transfers SET state = 'settled' WHERE id = $1", [inFlight]);
    });
    expect(naming(res, 'ledger:', 'USD: postings sum to -100 and transfers in flight to 0')).toHaveLength(1);
    expect(naming(res, 'transfer:', inFlight, 'settled, but no credit posting', `account ${bob} (its journal ends at seq 2)`)).toHaveLength(1);
  });

  it('fails on a credit applied in two databases, naming both', async () => {
    const res = await planted(async ({ eu }) => {
      await eu.query('DROP INDEX journal_transfer_once');
      await posting(eu, { account: bob, seq: 2, kind: 'credit', transfer: settled, amount: 300, after: 300 });
    });
    expect(res.ok).toBe(false);
    expect(naming(res, 'transfer:', settled, 'credited 2 times', `${bob} seq 2 in eu`, `${bob} seq 2 in us`)).toHaveLength(1);
    // eu has no row for bob, so eu's copy of the credit sums under no known currency.
    expect(naming(res, 'ledger:', '???: postings sum to 300')).toHaveLength(1);
    expect(naming(res, 'residency:', `eu: account ${bob} seq 2..2: 1 posting(s) in this journal, its id names region us, not eu`)).toHaveLength(1);
  });

  it('fails on a settled transfer whose credit is in no journal (lost)', async () => {
    const res = await planted(async ({ us }) => {
      await us.query('DELETE FROM journal WHERE account_id = $1 AND seq = 2', [bob]);
    });
    expect(naming(res, 'transfer:', settled, 'settled, but no credit posting on account', bob)).toHaveLength(1);
    expect(naming(res, 'ledger:', 'USD: postings sum to -400')).toHaveLength(1);
  });

  it('fails on a debit whose transfer is in no database', async () => {
    const orphan = `tr_eu_${hex()}`;
    const res = await planted(async ({ eu }) => {
      await posting(eu, { account: alice, seq: 5, kind: 'debit', transfer: orphan, amount: -50, after: 550 });
    });
    expect(naming(res, 'transfer:', `eu: account ${alice} seq 5: debit posting for ${orphan}, which is in no region's transfers`)).toHaveLength(1);
    expect(naming(res, 'ledger:')).toHaveLength(1);
  });

  it("fails on a transfer row in another region's database, and on one in two databases", async () => {
    const moved = await planted(async ({ eu, us }) => {
      await eu.query('DELETE FROM transfers WHERE id = $1', [settled]);
      await transfer(us, settled, 'transfer', alice, bob, 300, 'settled');
    });
    expect(naming(moved, 'residency:', `us: transfer ${settled}`, 'its id names region eu, not us')).toHaveLength(1);
    expect(naming(moved, 'acknowledged:', `eu: acknowledged transfer ${settled}`, 'not in transfers')).toHaveLength(1);

    const twice = await planted(async ({ us }) => {
      await transfer(us, settled, 'transfer', alice, bob, 300, 'settled');
    });
    expect(naming(twice, 'transfer:', `transfer ${settled} is in the transfers of eu and us`)).toHaveLength(1);
    expect(naming(twice, 'residency:', `us: transfer ${settled}`)).toHaveLength(1);
    // The legs are judged once, against the home row: one transfer, not two.
    expect(naming(twice, 'credited')).toEqual([]);
  });

  it("fails on an account's postings, row and snapshot in another region's database", async () => {
    const stray = `acc_us_${hex()}`;
    const res = await planted(async ({ eu }) => {
      await account(eu, stray, 'us');
      await posting(eu, { account: stray, seq: 1, kind: 'open', amount: 0, after: 0 });
      await eu.query("INSERT INTO snapshots (account_id, seq, state, epoch) VALUES ($1, 1, '{\"balance\": \"0\", \"seq\": 1}', 1)", [stray]);
    });
    expect(naming(res, 'residency:', `eu: account ${stray} seq 1..1: 1 posting(s) in this journal, its id names region us, not eu`)).toHaveLength(1);
    expect(naming(res, 'residency:', `eu: account row ${stray}: its id names region us, not eu`)).toHaveLength(1);
    expect(naming(res, 'residency:', `eu: snapshot of account ${stray}: its id names region us`)).toHaveLength(1);
  });

  it("fails on a hold in another region's database", async () => {
    const hold = `hold_us_${hex()}`;
    const res = await planted(async ({ eu }) => {
      await eu.query(
        `INSERT INTO holds (id, tenant_id, source_id, destination_id, amount, currency, multi_capture, state, expires_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 10, 'USD', false, 'voided', now(), now(), now())`, [hold, TENANT, alice, bob]);
    });
    expect(naming(res, 'residency:', `eu: hold ${hold}: its id names region us, not eu`)).toHaveLength(1);
  });

  it('fails on an acknowledged transfer missing from its region, or from a region with no database', async () => {
    const lostUs = `tr_us_${hex()}`;
    const lostAp = `tr_ap_${hex()}`;
    const res = await checkRegions(clients, { requests: [...log, acknowledged(lostUs, 'transfer', {}, 'debited'), acknowledged(lostAp, 'transfer', {}, 'debited')] });
    expect(res.ok).toBe(false);
    expect(naming(res, 'acknowledged:', `us: acknowledged transfer ${lostUs}`, 'not in transfers: an acknowledged payment was lost')).toHaveLength(1);
    expect(naming(res, 'acknowledged:', lostAp, 'region ap has no database')).toHaveLength(1);
  });

  it('reads REGION_DATABASE_URLS', () => {
    expect(parseRegionUrls('eu=postgres://a/x?sslmode=require, us=postgres://b/y')).toEqual({ eu: 'postgres://a/x?sslmode=require', us: 'postgres://b/y' });
    expect(parseRegionUrls('eu=postgres://a/x,eu=postgres://b/y')).toMatch(/named twice/);
    expect(parseRegionUrls('postgres://a/x')).toMatch(/not region=URL/);
    expect(parseRegionUrls('EU=postgres://a/x')).toMatch(/not a region name/);
  });
});
