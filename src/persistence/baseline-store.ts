// The row-locking baseline's tables and statements (ENGINE=baseline): its schema, its reads,
// and the statements one request's transaction is made of, each a named function. Rows come
// back as domain values (AccountState); which statement runs when, and the rules that decide
// a movement, are the workflow's (src/baseline/engine.ts, src/domain/account.ts decide).
import type { AccountKind, AccountState, AccountStatus, TransferKind } from '../domain/account.ts';
import type { AccountId, Region, TenantId, TransferId } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import type { Client, Pool } from './db.ts';

// Every query below reads or locks by primary key; the journal's transfer index is the one a
// real ledger keeps to show a payment's legs (geopay keeps one too), created_at on keys serves
// their expiry. No foreign keys: the rows a transaction refers to are locked and checked by it.
// The accounts, journal and transfers differ from geopay's on purpose (balance, status and seq
// live on the row that is locked; every transfer settles in its transaction). The keys do not:
// their table is geopay's, copied by LIKE (columns, defaults, primary key, expiry index) from
// idempotency_keys, which migrate() has created before this runs.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS baseline_accounts (
  id              text PRIMARY KEY,
  tenant_id       text,
  kind            text NOT NULL CHECK (kind IN ('customer', 'external')),
  currency        char(3) NOT NULL,
  region          text NOT NULL,
  balance         bigint NOT NULL DEFAULT 0,
  overdraft_limit bigint NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
  status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'frozen', 'closed')),
  seq             bigint NOT NULL DEFAULT 1,
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL,
  CHECK (kind = 'external' OR balance >= -overdraft_limit)
);
CREATE TABLE IF NOT EXISTS baseline_journal (
  account_id    text NOT NULL,
  seq           bigint NOT NULL,
  transfer_id   text NOT NULL,
  amount        bigint NOT NULL,
  balance_after bigint NOT NULL,
  created_at    timestamptz NOT NULL,
  PRIMARY KEY (account_id, seq)
);
CREATE INDEX IF NOT EXISTS baseline_journal_transfer ON baseline_journal (transfer_id);
CREATE TABLE IF NOT EXISTS baseline_transfers (
  id             text PRIMARY KEY,
  tenant_id      text NOT NULL,
  kind           text NOT NULL CHECK (kind IN ('transfer', 'deposit', 'withdrawal')),
  source_id      text NOT NULL,
  destination_id text NOT NULL,
  amount         bigint NOT NULL CHECK (amount > 0),
  currency       char(3) NOT NULL,
  state          text NOT NULL CHECK (state = 'settled'),
  metadata       jsonb,
  created_at     timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS baseline_idempotency (LIKE idempotency_keys INCLUDING ALL);
`;

/** Commits what `work` did when it returns, rolls it back when it throws. */
export async function inTransaction<T>(pool: Pool, work: (c: Client) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  let broken: Error | undefined;
  try {
    await c.query('BEGIN');
    const value = await work(c);
    await c.query('COMMIT');
    return value;
  } catch (err) {
    // A connection that cannot even roll back is not given back to the pool.
    await c.query('ROLLBACK').catch((e: unknown) => { broken = e instanceof Error ? e : new Error(String(e)); });
    throw err;
  } finally {
    c.release(broken);
  }
}

/** Serialization failure and deadlock: the transaction was rolled back and may simply run again. */
export function isLockConflict(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '40001' || code === '40P01';
}

/** Creates the baseline's tables if missing; nodes starting together take turns. */
export function setupBaselineSchema(pool: Pool): Promise<void> {
  return inTransaction(pool, async (c) => {
    // Concurrent CREATE TABLE IF NOT EXISTS of one name can still fail on the catalog.
    await c.query("SELECT pg_advisory_xact_lock(hashtext('geopay_baseline_schema'))");
    await c.query(SCHEMA);
  });
}

// ---- Accounts ---------------------------------------------------------------------------

/** A baseline_accounts row; its ids and codes were validated before they were written. */
interface AccountRow {
  id: AccountId; tenant_id: TenantId | null; kind: AccountKind; currency: Currency; region: Region;
  balance: bigint; overdraft_limit: bigint; status: AccountStatus; seq: bigint; created_at: Date;
  metadata?: Record<string, unknown>;
}

/** A row as the domain's state; a baseline account has no holds. */
function stateOf(r: AccountRow): AccountState {
  return {
    id: r.id, kind: r.kind, tenantId: r.tenant_id, currency: r.currency, region: r.region, status: r.status,
    balance: r.balance, held: 0n, holds: {}, overdraftLimit: r.overdraft_limit, seq: Number(r.seq),
    metadata: r.metadata ?? {}, createdAt: r.created_at.toISOString(),
  };
}

const STATE_COLUMNS = 'id, tenant_id, kind, currency, region, balance, overdraft_limit, status, seq, created_at';

/** The tenant's customer account, or undefined for any other id. */
export async function readAccount(pool: Pool, tenantId: string, id: AccountId): Promise<AccountState | undefined> {
  const { rows } = await pool.query<AccountRow>(
    `SELECT ${STATE_COLUMNS}, metadata FROM baseline_accounts WHERE id = $1 AND tenant_id = $2 AND kind = 'customer'`, [id, tenantId]);
  return rows[0] && stateOf(rows[0]);
}

/**
 * Locks the rows of `ids` in id order (two movements between the same accounts in opposite
 * directions queue on the same first row instead of deadlocking) and reads their state, but
 * not their metadata: decide() does not read it, and the hot path reads no jsonb.
 */
export async function lockAccounts(c: Client, ids: readonly AccountId[]): Promise<AccountState[]> {
  const { rows } = await c.query<AccountRow>(
    `SELECT ${STATE_COLUMNS} FROM baseline_accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE`, [ids]);
  return rows.map(stateOf);
}

/** The external account of a region and currency, created by the first movement through it. */
export async function createExternalAccount(c: Client, id: AccountId, currency: Currency, region: Region): Promise<void> {
  await c.query(
    `INSERT INTO baseline_accounts (id, tenant_id, kind, currency, region, created_at)
     VALUES ($1, NULL, 'external', $2, $3, now()) ON CONFLICT (id) DO NOTHING`, [id, currency, region]);
}

// ---- Idempotency keys -------------------------------------------------------------------

export interface KeyClaim { tenantId: string; key: string; requestHash: string }

/** What a key that is already taken holds: the answer is null only while its request runs. */
export interface BaselineStoredKey { requestHash: string; statusCode: number | null; response: unknown }

/**
 * One statement: the key (with its answer) and the account are inserted together, or neither.
 * False when the key was taken already.
 */
export async function insertAccountWithKey(pool: Pool, k: KeyClaim & { statusCode: number; response: unknown }, a: AccountState): Promise<boolean> {
  const { rowCount } = await pool.query(
    `WITH claim AS (
       INSERT INTO baseline_idempotency (tenant_id, key, request_hash, resource_id, status_code, response)
       VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT DO NOTHING RETURNING 1)
     INSERT INTO baseline_accounts (id, tenant_id, kind, currency, region, balance, overdraft_limit, status, seq, metadata, created_at)
     SELECT $4, $1, $7, $8, $9, $10::bigint, $11::bigint, $12, $13, $14::jsonb, $15 FROM claim`,
    [k.tenantId, k.key, k.requestHash, a.id, k.statusCode, JSON.stringify(k.response), a.kind, a.currency, a.region,
      a.balance.toString(), a.overdraftLimit.toString(), a.status, a.seq, JSON.stringify(a.metadata), a.createdAt],
  );
  return rowCount === 1;
}

/**
 * Claims the key, first thing in a movement's transaction: a concurrent duplicate waits here
 * for the original's commit and then reads its answer, before it holds any account lock.
 */
export async function claimKey(c: Client, k: KeyClaim): Promise<boolean> {
  const { rowCount } = await c.query(
    'INSERT INTO baseline_idempotency (tenant_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [k.tenantId, k.key, k.requestHash]);
  return rowCount === 1;
}

/** The key's entry, or undefined when it is gone (expired this very moment). */
export async function readKey(db: Pool | Client, tenantId: string, key: string): Promise<BaselineStoredKey | undefined> {
  const { rows } = await db.query<{ request_hash: string; status_code: number | null; response: unknown }>(
    'SELECT request_hash, status_code, response FROM baseline_idempotency WHERE tenant_id = $1 AND key = $2', [tenantId, key]);
  const r = rows[0];
  return r && { requestHash: r.request_hash, statusCode: r.status_code, response: r.response };
}

/** Stores the answer of a claimed key that moved nothing (a refusal). */
export async function storeAnswer(c: Client, tenantId: string, key: string, statusCode: number, response: unknown): Promise<void> {
  await c.query('UPDATE baseline_idempotency SET status_code = $3, response = $4::jsonb WHERE tenant_id = $1 AND key = $2',
    [tenantId, key, statusCode, JSON.stringify(response)]);
}

/** Keys older than the retention are forgotten, as geopay's are. */
export async function deleteExpiredBaselineKeys(pool: Pool, retentionMs: number): Promise<number> {
  const res = await pool.query('DELETE FROM baseline_idempotency WHERE created_at < now() - make_interval(secs => $1::float8 / 1000)', [retentionMs]);
  return res.rowCount ?? 0;
}

// ---- Transfers --------------------------------------------------------------------------

export type BaselineMoveKind = Extract<TransferKind, 'transfer' | 'deposit' | 'withdrawal'>;

/** A baseline transfer: settled in the transaction that created it, never changed after. */
export interface SettledTransfer {
  id: TransferId; kind: BaselineMoveKind; sourceId: AccountId; destinationId: AccountId;
  amount: bigint; currency: Currency; metadata: Record<string, unknown> | null; createdAt: string;
}

interface TransferRow {
  id: TransferId; kind: BaselineMoveKind; source_id: AccountId; destination_id: AccountId; amount: bigint; currency: Currency;
  metadata: Record<string, unknown> | null; created_at: Date;
}

/** The tenant's transfer, or undefined for any other id. */
export async function readTransfer(pool: Pool, tenantId: string, id: TransferId): Promise<SettledTransfer | undefined> {
  const { rows } = await pool.query<TransferRow>(
    'SELECT id, kind, source_id, destination_id, amount, currency, metadata, created_at FROM baseline_transfers WHERE id = $1 AND tenant_id = $2', [id, tenantId]);
  const r = rows[0];
  return r && {
    id: r.id, kind: r.kind, sourceId: r.source_id, destinationId: r.destination_id, amount: r.amount, currency: r.currency,
    metadata: r.metadata, createdAt: r.created_at.toISOString(),
  };
}

/** One leg as decided: the signed amount it posts and the account's balance and seq after it. */
export interface Leg { accountId: AccountId; delta: bigint; balanceAfter: bigint; seq: number }

/**
 * Balances, both postings, the transfer and the key's answer in one statement. Each account
 * row is written only if it still is the state the leg was decided on (seq and balance one
 * posting before): the rows are locked, so anything but 2 moved rows and 1 keyed is a bug.
 */
export async function applyMove(
  c: Client,
  m: { tenantId: string; key: string; transfer: SettledTransfer; legs: readonly [Leg, Leg]; statusCode: number; response: unknown },
): Promise<{ moved: number; keyed: number }> {
  const { transfer: t, legs: [debit, credit] } = m;
  const { rows: [done] } = await c.query<{ moved: number; keyed: number }>(
    `WITH moved AS (
       UPDATE baseline_accounts a SET balance = d.balance, seq = d.seq
         FROM (VALUES ($1::text, $2::bigint, $3::bigint, $4::bigint), ($5::text, $6::bigint, $7::bigint, $8::bigint)) AS d (id, delta, balance, seq)
        WHERE a.id = d.id AND a.seq = d.seq - 1 AND a.balance + d.delta = d.balance
       RETURNING a.id, d.delta, a.balance, a.seq),
     posted AS (
       INSERT INTO baseline_journal (account_id, seq, transfer_id, amount, balance_after, created_at)
       SELECT id, seq, $9, delta, balance, $10 FROM moved),
     recorded AS (
       INSERT INTO baseline_transfers (id, tenant_id, kind, source_id, destination_id, amount, currency, state, metadata, created_at)
       VALUES ($9, $11, $12, $13, $14, $15::bigint, $16, 'settled', $17::jsonb, $10)),
     keyed AS (
       UPDATE baseline_idempotency SET resource_id = $9, status_code = $20, response = $18::jsonb
        WHERE tenant_id = $11 AND key = $19 RETURNING 1)
     SELECT (SELECT count(*) FROM moved)::int AS moved, (SELECT count(*) FROM keyed)::int AS keyed`,
    [
      debit.accountId, debit.delta.toString(), debit.balanceAfter.toString(), debit.seq,
      credit.accountId, credit.delta.toString(), credit.balanceAfter.toString(), credit.seq,
      t.id, t.createdAt, m.tenantId, t.kind, t.sourceId, t.destinationId, t.amount.toString(), t.currency,
      t.metadata === null ? null : JSON.stringify(t.metadata), JSON.stringify(m.response), m.key, m.statusCode,
    ],
  );
  return { moved: done?.moved ?? 0, keyed: done?.keyed ?? 0 };
}
