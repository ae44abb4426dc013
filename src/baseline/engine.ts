// The row-locking baseline: the design most teams would build instead of actors, kept as the
// benchmarks' comparison point (ENGINE=baseline). Each request is one PostgreSQL transaction on
// pooled connections: claim the idempotency key, lock the account rows in id order, check, move
// the balances, journal both legs and store the answer with the key. No actor, no saga.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Client, Pool } from '../persistence/db.ts';
import type { AccountId, Region } from '../domain/ids.ts';
import { externalAccountId, makeAccountId, makeTransferId, regionOf, uuidv7Hex } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { MAX_AMOUNT } from '../domain/money.ts';
import type { ErrorCode } from '../domain/errors.ts';
import { ERRORS, GeopayError } from '../domain/errors.ts';
import type { AccountView, TransferView } from '../domain/views.ts';
import { problem } from '../domain/views.ts';
import type { HttpAnswer } from '../http/idempotency.ts';

// Every query below reads or locks by primary key; the journal's transfer index is the one a
// real ledger keeps to show a payment's legs (geopay keeps one too), created_at on keys serves
// their expiry. No foreign keys: the rows a transaction refers to are locked and checked by it.
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
CREATE TABLE IF NOT EXISTS baseline_idempotency (
  tenant_id    text NOT NULL,
  key          text NOT NULL,
  request_hash text NOT NULL,
  resource_id  text,
  status_code  integer,
  response     jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS baseline_idempotency_created ON baseline_idempotency (created_at);
`;

/** Creates the baseline's tables if missing; nodes starting together take turns. */
export async function setupBaseline(pool: Pool, logger: Logger): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    // Concurrent CREATE TABLE IF NOT EXISTS of one name can still fail on the catalog.
    await c.query("SELECT pg_advisory_xact_lock(hashtext('geopay_baseline_schema'))");
    await c.query(SCHEMA);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
  logger.info('baseline tables ready');
}

interface AccountRow {
  id: string; tenant_id: string | null; kind: 'customer' | 'external'; currency: string; region: string;
  balance: bigint; overdraft_limit: bigint; status: 'open' | 'frozen' | 'closed'; seq: bigint;
  metadata: Record<string, unknown>; created_at: Date;
}

interface TransferRow {
  id: string; kind: string; source_id: string; destination_id: string; amount: bigint; currency: string;
  metadata: Record<string, unknown> | null; created_at: Date;
}

function accountRowView(r: AccountRow): AccountView {
  return {
    id: r.id, tenantId: r.tenant_id, currency: r.currency, region: r.region, status: r.status,
    balance: r.balance.toString(), held: '0',
    available: (r.kind === 'external' ? r.balance : r.balance + r.overdraft_limit).toString(),
    overdraftLimit: r.overdraft_limit.toString(), seq: Number(r.seq), metadata: r.metadata, createdAt: r.created_at.toISOString(),
  };
}

/** Every baseline transfer settles in its own transaction, so its view is fixed at commit. */
function transferView(t: { id: string; kind: string; src: string; dst: string; amount: bigint; currency: string; metadata: Record<string, unknown> | null; at: string }): TransferView {
  return {
    id: t.id, kind: t.kind, sourceAccountId: t.src, destinationAccountId: t.dst, amount: t.amount.toString(), currency: t.currency,
    state: 'settled', refusalCode: null, metadata: t.metadata, holdId: null, refundOf: null, refunded: '0', createdAt: t.at, updatedAt: t.at,
  };
}

/** What a movement reads of the rows it locks (not the metadata: no jsonb on the hot path). */
type LockedRow = Pick<AccountRow, 'id' | 'tenant_id' | 'kind' | 'currency' | 'balance' | 'overdraft_limit' | 'status'>;
const LOCK_ROWS = `SELECT id, tenant_id, kind, currency, balance, overdraft_limit, status
  FROM baseline_accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE`;

/** geopay's rules (src/domain/account.ts decide), on rows this transaction has locked. */
function debitRefusal(a: LockedRow, amount: bigint): ErrorCode | undefined {
  if (a.status === 'frozen') return 'account_frozen';
  if (a.status === 'closed') return 'account_closed';
  if (a.kind !== 'external' && a.balance + a.overdraft_limit < amount) return 'insufficient_funds';
  if (a.balance - amount < -MAX_AMOUNT) return 'balance_out_of_range';
  return undefined;
}

// geopay's saga returns a credit the destination refuses (201, state returned); here debit and
// credit are one transaction, so the same refusal simply rejects the request (422).
function creditRefusal(a: LockedRow, amount: bigint): ErrorCode | undefined {
  if (a.status === 'closed') return 'account_closed';
  if (a.balance + amount > MAX_AMOUNT) return 'balance_out_of_range';
  return undefined;
}

/** Serialization failure and deadlock: the transaction was rolled back and may simply run again. */
const isConflict = (err: unknown): boolean => {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '40001' || code === '40P01';
};

export interface OpenRequest {
  tenantId: string; key: string; hash: string; currency: Currency; region: Region;
  overdraftLimit: bigint; metadata: Record<string, unknown>;
}

export interface MoveRequest {
  kind: 'transfer' | 'deposit' | 'withdrawal';
  tenantId: string; key: string; hash: string;
  /** For a transfer, the tenant's two accounts; for a deposit or withdrawal, its one account. */
  accounts: readonly [AccountId] | readonly [AccountId, AccountId];
  amount: bigint; currency: Currency; metadata: Record<string, unknown> | null;
}

export class BaselineEngine {
  /** Transactions run again after a deadlock or serialization failure (0 expected: locks are ordered). */
  conflictRetries = 0;

  constructor(
    private readonly pool: Pool,
    private readonly opts: { maxAttempts: number; clock: () => number },
  ) {}

  /** One statement: the key and the account are inserted together, or neither. */
  async openAccount(o: OpenRequest): Promise<HttpAnswer> {
    const now = this.opts.clock();
    const id = makeAccountId(o.region, uuidv7Hex(now, randomBytes(10)));
    const at = new Date(now);
    const view = accountRowView({
      id, tenant_id: o.tenantId, kind: 'customer', currency: o.currency, region: o.region, balance: 0n,
      overdraft_limit: o.overdraftLimit, status: 'open', seq: 1n, metadata: o.metadata, created_at: at,
    });
    const { rowCount } = await this.pool.query(
      `WITH claim AS (
         INSERT INTO baseline_idempotency (tenant_id, key, request_hash, resource_id, status_code, response)
         VALUES ($1, $2, $3, $4, 201, $5::jsonb) ON CONFLICT DO NOTHING RETURNING 1)
       INSERT INTO baseline_accounts (id, tenant_id, kind, currency, region, overdraft_limit, metadata, created_at)
       SELECT $4, $1, 'customer', $6, $7, $8::bigint, $9::jsonb, $10 FROM claim`,
      [o.tenantId, o.key, o.hash, id, JSON.stringify(view), o.currency, o.region, o.overdraftLimit.toString(), JSON.stringify(o.metadata), at],
    );
    if (rowCount === 1) return { status: 201, body: view };
    return stored(this.pool, o.tenantId, o.key, o.hash);
  }

  async getAccount(tenantId: string, id: AccountId): Promise<AccountView> {
    const { rows } = await this.pool.query<AccountRow>(
      "SELECT * FROM baseline_accounts WHERE id = $1 AND tenant_id = $2 AND kind = 'customer'", [id, tenantId]);
    if (!rows[0]) throw new GeopayError('account_not_found');
    return accountRowView(rows[0]);
  }

  async getTransfer(tenantId: string, id: string): Promise<TransferView> {
    const { rows } = await this.pool.query<TransferRow>('SELECT * FROM baseline_transfers WHERE id = $1 AND tenant_id = $2', [id, tenantId]);
    const r = rows[0];
    if (!r) throw new GeopayError('transfer_not_found');
    return transferView({
      id: r.id, kind: r.kind, src: r.source_id, dst: r.destination_id, amount: r.amount, currency: r.currency,
      metadata: r.metadata, at: r.created_at.toISOString(),
    });
  }

  /** A transfer, deposit or withdrawal: one transaction, run again (bounded) on a lock conflict. */
  async move(m: MoveRequest): Promise<HttpAnswer> {
    // Money enters and leaves through the external account of the customer account's region.
    const [src, dst] = m.kind === 'transfer'
      ? [m.accounts[0], m.accounts[1]!]
      : m.kind === 'deposit'
        ? [externalAccountId(regionOf(m.accounts[0]), m.currency), m.accounts[0]]
        : [m.accounts[0], externalAccountId(regionOf(m.accounts[0]), m.currency)];
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.transaction((c) => this.moveOnce(c, m, src, dst));
      } catch (err) {
        if (!isConflict(err)) throw err;
        if (attempt >= this.opts.maxAttempts) throw new GeopayError('database_unavailable', undefined, { cause: err });
        this.conflictRetries++;
        // Jittered backoff so the transactions that collided do not collide again.
        await sleep(Math.random() * 2 ** attempt);
      }
    }
  }

  private async moveOnce(c: Client, m: MoveRequest, src: AccountId, dst: AccountId): Promise<{ commit: boolean; answer: HttpAnswer }> {
    // 1. The key, first: a concurrent duplicate waits here for the original's commit and
    //    then reads its answer, before it holds any account lock.
    const claim = await c.query(
      'INSERT INTO baseline_idempotency (tenant_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [m.tenantId, m.key, m.hash]);
    if (claim.rowCount === 0) return { commit: false, answer: await stored(c, m.tenantId, m.key, m.hash) };

    // 2. Both rows, locked in id order: two transfers between the same accounts in opposite
    //    directions queue on the same first row instead of deadlocking.
    const ids = [src, dst];
    let { rows } = await c.query<LockedRow>(LOCK_ROWS, [ids]);
    // The edge checks of geopay's routes, in their order: whose account, same, currency.
    const mine = m.accounts.map((id) => rows.find((r) => r.id === id));
    // Another tenant's account is as missing as one that does not exist.
    if (mine.some((a) => !a || a.kind !== 'customer' || a.tenant_id !== m.tenantId)) throw new GeopayError('account_not_found');
    if (src === dst) throw new GeopayError('same_account');
    if (mine.some((a) => a!.currency !== m.currency)) throw new GeopayError('currency_mismatch');
    const ext = src.startsWith('ext_') ? src : dst.startsWith('ext_') ? dst : undefined;
    if (ext !== undefined && !rows.some((r) => r.id === ext)) {
      // First movement through this region's external account of the currency. 'ext_' sorts
      // after 'acc_', so creating and locking it now keeps the id order of the locks.
      await c.query(
        `INSERT INTO baseline_accounts (id, tenant_id, kind, currency, region, created_at)
         VALUES ($1, NULL, 'external', $2, $3, now()) ON CONFLICT (id) DO NOTHING`, [ext, m.currency, regionOf(ext)]);
      ({ rows } = await c.query<LockedRow>(LOCK_ROWS, [ids]));
    }
    const from = rows.find((r) => r.id === src);
    const to = rows.find((r) => r.id === dst);
    if (!from || !to) throw new Error(`baseline: account row missing after lock (${src}, ${dst})`);

    // 3. A business refusal is an answer like any other: stored with the key, committed.
    const refusal = debitRefusal(from, m.amount) ?? creditRefusal(to, m.amount);
    if (refusal !== undefined) {
      const answer = { status: ERRORS[refusal].status, body: problem(refusal) };
      await c.query('UPDATE baseline_idempotency SET status_code = $3, response = $4::jsonb WHERE tenant_id = $1 AND key = $2',
        [m.tenantId, m.key, answer.status, JSON.stringify(answer.body)]);
      return { commit: true, answer };
    }

    // 4. Balances, both postings, the transfer and the answer in one statement.
    const now = this.opts.clock();
    const id = makeTransferId(uuidv7Hex(now, randomBytes(10)));
    const at = new Date(now);
    const view = transferView({ id, kind: m.kind, src, dst, amount: m.amount, currency: m.currency, metadata: m.metadata, at: at.toISOString() });
    const amount = m.amount.toString();
    const { rows: [done] } = await c.query<{ moved: number; keyed: number }>(
      `WITH moved AS (
         UPDATE baseline_accounts a SET balance = a.balance + d.delta, seq = a.seq + 1
           FROM (VALUES ($1::text, -$3::bigint), ($2::text, $3::bigint)) AS d (id, delta)
          WHERE a.id = d.id
         RETURNING a.id, d.delta, a.balance, a.seq),
       posted AS (
         INSERT INTO baseline_journal (account_id, seq, transfer_id, amount, balance_after, created_at)
         SELECT id, seq, $4, delta, balance, $5 FROM moved),
       recorded AS (
         INSERT INTO baseline_transfers (id, tenant_id, kind, source_id, destination_id, amount, currency, state, metadata, created_at)
         VALUES ($4, $6, $7, $1, $2, $3::bigint, $8, 'settled', $9::jsonb, $5)),
       keyed AS (
         UPDATE baseline_idempotency SET resource_id = $4, status_code = 201, response = $10::jsonb
          WHERE tenant_id = $6 AND key = $11 RETURNING 1)
       SELECT (SELECT count(*) FROM moved)::int AS moved, (SELECT count(*) FROM keyed)::int AS keyed`,
      [src, dst, amount, id, at, m.tenantId, m.kind, m.currency, m.metadata === null ? null : JSON.stringify(m.metadata), JSON.stringify(view), m.key],
    );
    // Both rows and the key are this transaction's own (locked, inserted): anything else is our bug.
    if (done?.moved !== 2) throw new Error(`baseline: moved ${done?.moved} account rows, not 2`);
    if (done.keyed !== 1) throw new Error(`baseline: stored ${done.keyed} idempotency rows, not 1`);
    return { commit: true, answer: { status: 201, body: view } };
  }

  private async transaction(work: (c: Client) => Promise<{ commit: boolean; answer: HttpAnswer }>): Promise<HttpAnswer> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await c.query('BEGIN');
      const { commit, answer } = await work(c);
      await c.query(commit ? 'COMMIT' : 'ROLLBACK');
      return answer;
    } catch (err) {
      // A connection that cannot even roll back is not given back to the pool.
      await c.query('ROLLBACK').catch((e: unknown) => { broken = e instanceof Error ? e : new Error(String(e)); });
      throw err;
    } finally {
      c.release(broken);
    }
  }

  /** Keys older than the retention are forgotten, as geopay's are. */
  async deleteExpiredKeys(retentionMs: number): Promise<number> {
    const res = await this.pool.query('DELETE FROM baseline_idempotency WHERE created_at < now() - make_interval(secs => $1::float8 / 1000)', [retentionMs]);
    return res.rowCount ?? 0;
  }
}

/** The answer stored under a key that is already taken. */
async function stored(db: Pool | Client, tenantId: string, key: string, hash: string): Promise<HttpAnswer> {
  const { rows } = await db.query<{ request_hash: string; status_code: number | null; response: unknown }>(
    'SELECT request_hash, status_code, response FROM baseline_idempotency WHERE tenant_id = $1 AND key = $2', [tenantId, key]);
  const r = rows[0];
  // Gone between the conflict and this read: expired this very moment. The client retries.
  if (!r) throw new GeopayError('idempotency_key_in_progress');
  if (r.request_hash !== hash) throw new GeopayError('idempotency_key_reused');
  // The key and its answer commit together; a key without one is a bug, not a race.
  if (r.status_code === null) throw new Error(`baseline: idempotency key without an answer (${tenantId})`);
  return { status: r.status_code, body: r.response };
}
