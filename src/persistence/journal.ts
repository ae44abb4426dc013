// The write path and recovery of account actors. A batch of one actor's commands commits in
// one transaction that starts with the shard's epoch guard; recovery is the latest snapshot
// plus the postings after it, replayed through the same evolve as the live path.
import type { Pool } from './db.ts';
import type { AccountEvent, AccountState, JournalKind } from '../domain/account.ts';
import { evolve } from '../domain/account.ts';
import type { AccountId, Region, TenantId, TransferId } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { GeopayError } from '../domain/errors.ts';

export interface JournalRow {
  accountId: AccountId;
  seq: number;
  kind: JournalKind;
  transferId: TransferId | null;
  amount: bigint;
  balanceAfter: bigint;
  at: string;
}

export interface NewAccountRow {
  id: AccountId; tenantId: TenantId | null; kind: 'customer' | 'external'; currency: Currency;
  region: Region; shard: string; overdraftLimit: bigint; metadata: Record<string, unknown>; at: string;
}

export interface NewTransferRow {
  id: TransferId; tenantId: TenantId | null; kind: 'transfer' | 'deposit' | 'withdrawal';
  sourceId: AccountId; destinationId: AccountId; amount: bigint; currency: Currency;
  metadata: Record<string, unknown> | null; at: string;
}

export interface TransferUpdate {
  id: TransferId;
  from: 'debited' | 'refused';
  to: 'settled' | 'refused' | 'returned';
  refusalCode: string | null;
  at: string;
}

export interface IdempotencyRow {
  tenantId: string; key: string; requestHash: string; resourceId: string | null;
  statusCode: number | null; response: unknown;
}

export interface WriteSet {
  shard: string;
  epoch: bigint;
  nodeId: string;
  accounts: NewAccountRow[];
  journal: JournalRow[];
  newTransfers: NewTransferRow[];
  transferUpdates: TransferUpdate[];
  idempotency: IdempotencyRow[];
  snapshot: { accountId: AccountId; seq: number; state: AccountState } | undefined;
}

/** A write lost a race it must not win (a key or a transfer claimed elsewhere): redo the batch. */
export class WriteConflict extends Error {}

/** Observes commits; tests count transactions with it. */
export interface CommitObserver { (ws: WriteSet): void }

export async function commitBatch(pool: Pool, ws: WriteSet, onCommit?: CommitObserver): Promise<void> {
  const client = await pool.connect();
  let open = false;
  try {
    await client.query('BEGIN');
    open = true;
    // The fence: the shard's epoch must still be ours. FOR SHARE lets the shard's other
    // writers proceed together, and makes an epoch bump wait for this transaction.
    const guard = await client.query('SELECT 1 FROM shards WHERE id = $1 AND epoch = $2 FOR SHARE', [ws.shard, ws.epoch.toString()]);
    if (guard.rowCount !== 1) {
      throw new GeopayError('shard_unavailable', `shard ${ws.shard} is no longer at epoch ${ws.epoch}`);
    }
    for (const a of ws.accounts) {
      await client.query(
        `INSERT INTO accounts (id, tenant_id, kind, currency, region, shard, overdraft_limit, metadata, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [a.id, a.tenantId, a.kind, a.currency, a.region, a.shard, a.overdraftLimit.toString(), JSON.stringify(a.metadata), a.at],
      );
    }
    if (ws.journal.length > 0) {
      const j = ws.journal;
      await client.query(
        `INSERT INTO journal (account_id, seq, kind, transfer_id, amount, balance_after, epoch, node_id, created_at)
         SELECT a, s, k, t, m, b, $7, $8, c
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $9::timestamptz[]) AS x(a, s, k, t, m, b, c)`,
        [j.map((r) => r.accountId), j.map((r) => String(r.seq)), j.map((r) => r.kind), j.map((r) => r.transferId),
          j.map((r) => r.amount.toString()), j.map((r) => r.balanceAfter.toString()), ws.epoch.toString(), ws.nodeId, j.map((r) => r.at)],
      );
    }
    if (ws.newTransfers.length > 0) {
      const t = ws.newTransfers;
      await client.query(
        `INSERT INTO transfers (id, tenant_id, kind, source_id, destination_id, amount, currency, state, metadata, created_at, updated_at)
         SELECT i, tn, k, s, d, m, c, 'debited', md, at, at
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::jsonb[], $9::timestamptz[])
           AS x(i, tn, k, s, d, m, c, md, at)`,
        [t.map((r) => r.id), t.map((r) => r.tenantId), t.map((r) => r.kind), t.map((r) => r.sourceId), t.map((r) => r.destinationId),
          t.map((r) => r.amount.toString()), t.map((r) => r.currency), t.map((r) => (r.metadata === null ? null : JSON.stringify(r.metadata))),
          t.map((r) => r.at)],
      );
    }
    if (ws.transferUpdates.length > 0) {
      const u = ws.transferUpdates;
      const res = await client.query(
        `UPDATE transfers t SET state = x.st, refusal_code = COALESCE(x.rc, t.refusal_code), updated_at = x.at
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS x(i, fr, st, rc, at)
         WHERE t.id = x.i AND t.state = x.fr`,
        [u.map((r) => r.id), u.map((r) => r.from), u.map((r) => r.to), u.map((r) => r.refusalCode), u.map((r) => r.at)],
      );
      if (res.rowCount !== u.length) throw new WriteConflict('a transfer changed state under this batch');
    }
    if (ws.idempotency.length > 0) {
      const k = ws.idempotency;
      const res = await client.query(
        `INSERT INTO idempotency_keys (tenant_id, key, request_hash, resource_id, status_code, response)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::jsonb[])
         ON CONFLICT DO NOTHING`,
        [k.map((r) => r.tenantId), k.map((r) => r.key), k.map((r) => r.requestHash), k.map((r) => r.resourceId),
          k.map((r) => r.statusCode), k.map((r) => (r.response === null || r.response === undefined ? null : JSON.stringify(r.response)))],
      );
      if (res.rowCount !== k.length) throw new WriteConflict('an idempotency key was taken under this batch');
    }
    if (ws.snapshot) await writeSnapshot(client, ws.snapshot, ws.epoch);
    await client.query('COMMIT');
    open = false;
    onCommit?.(ws);
  } catch (err) {
    if (open) await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

type Queryable = { query: Pool['query'] };

async function writeSnapshot(q: Queryable, s: { accountId: AccountId; seq: number; state: AccountState }, epoch: bigint): Promise<void> {
  await q.query(
    `INSERT INTO snapshots (account_id, seq, state, epoch) VALUES ($1, $2, $3, $4)
     ON CONFLICT (account_id) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state, epoch = EXCLUDED.epoch, created_at = now()
     WHERE snapshots.seq < EXCLUDED.seq`,
    [s.accountId, s.seq, JSON.stringify(stateToJson(s.state)), epoch.toString()],
  );
}

/** A snapshot outside a batch (passivation, shutdown), still under the shard's fence. */
export async function snapshotFenced(pool: Pool, shard: string, epoch: bigint, s: { accountId: AccountId; seq: number; state: AccountState }): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const guard = await client.query('SELECT 1 FROM shards WHERE id = $1 AND epoch = $2 FOR SHARE', [shard, epoch.toString()]);
    if (guard.rowCount !== 1) throw new GeopayError('shard_unavailable', `shard ${shard} is no longer at epoch ${epoch}`);
    await writeSnapshot(client, s, epoch);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

export function stateToJson(s: AccountState): Record<string, unknown> {
  return { ...s, balance: s.balance.toString(), overdraftLimit: s.overdraftLimit.toString() };
}

export function stateFromJson(j: Record<string, unknown>): AccountState {
  return { ...(j as unknown as AccountState), balance: BigInt(j.balance as string), overdraftLimit: BigInt(j.overdraftLimit as string) };
}

export interface Loaded {
  state: AccountState | undefined;
  lastSnapshotSeq: number;
}

interface AccountDbRow {
  id: string; tenant_id: string | null; kind: 'customer' | 'external'; currency: string; region: string;
  overdraft_limit: bigint; metadata: Record<string, unknown>; created_at: Date;
}

interface JournalDbRow { seq: bigint; kind: JournalKind; transfer_id: string | null; amount: bigint; balance_after: bigint; created_at: Date }

/** Recovery: the latest snapshot plus the postings after it, checked against balance_after. */
export async function loadAccount(pool: Pool, id: AccountId): Promise<Loaded> {
  const snap = await pool.query<{ seq: bigint; state: Record<string, unknown> }>('SELECT seq, state FROM snapshots WHERE account_id = $1', [id]);
  let state: AccountState | undefined;
  let lastSnapshotSeq = 0;
  if (snap.rows[0]) {
    state = stateFromJson(snap.rows[0].state);
    lastSnapshotSeq = Number(snap.rows[0].seq);
  }
  const { rows } = await pool.query<JournalDbRow>(
    'SELECT seq, kind, transfer_id, amount, balance_after, created_at FROM journal WHERE account_id = $1 AND seq > $2 ORDER BY seq',
    [id, lastSnapshotSeq],
  );
  if (rows.length === 0) return { state, lastSnapshotSeq };
  let account: AccountDbRow | undefined;
  if (state === undefined) {
    const a = await pool.query<AccountDbRow>('SELECT * FROM accounts WHERE id = $1', [id]);
    account = a.rows[0];
  }
  for (const r of rows) {
    state = evolve(state, rowToEvent(id, r, account));
    if (state.seq !== Number(r.seq) || state.balance !== r.balance_after) {
      throw new Error(`journal of ${id} disagrees with replay at seq ${r.seq}`);
    }
  }
  return { state, lastSnapshotSeq };
}

function rowToEvent(id: AccountId, r: JournalDbRow, a: AccountDbRow | undefined): AccountEvent {
  const transferId = r.transfer_id as TransferId;
  switch (r.kind) {
    case 'open':
      if (!a) throw new Error(`account row missing for ${id}`);
      return {
        type: 'Opened', id, kind: a.kind, tenantId: a.tenant_id as TenantId | null, currency: a.currency as Currency,
        region: a.region as Region, overdraftLimit: a.overdraft_limit, metadata: a.metadata, at: a.created_at.toISOString(),
      };
    case 'freeze': return { type: 'Frozen' };
    case 'unfreeze': return { type: 'Unfrozen' };
    case 'close': return { type: 'Closed' };
    case 'debit': return { type: 'Debited', transferId, amount: -r.amount };
    case 'credit': return { type: 'Credited', transferId, amount: r.amount };
    case 'return': return { type: 'Returned', transferId, amount: r.amount };
    default: throw new Error(`unknown journal kind ${String(r.kind)}`);
  }
}

export interface Prefetched {
  transferStates: Map<string, string>;
  keys: Map<string, StoredKey>;
}

export interface StoredKey {
  requestHash: string; resourceId: string | null; statusCode: number | null; response: unknown;
}

export const keyOf = (tenantId: string, key: string): string => `${tenantId}\u0000${key}`;

/** What a batch must know before deciding: states of transfers it would credit or return,
 * and idempotency keys already used. The actor is the only writer of these transitions. */
export async function prefetch(pool: Pool, transferIds: string[], keys: { tenantId: string; key: string }[]): Promise<Prefetched> {
  const out: Prefetched = { transferStates: new Map(), keys: new Map() };
  if (transferIds.length > 0) {
    const { rows } = await pool.query<{ id: string; state: string }>('SELECT id, state FROM transfers WHERE id = ANY($1::text[])', [transferIds]);
    for (const r of rows) out.transferStates.set(r.id, r.state);
  }
  if (keys.length > 0) {
    const { rows } = await pool.query<{ tenant_id: string; key: string; request_hash: string; resource_id: string | null; status_code: number | null; response: unknown }>(
      `SELECT k.tenant_id, k.key, k.request_hash, k.resource_id, k.status_code, k.response
       FROM idempotency_keys k JOIN unnest($1::text[], $2::text[]) AS x(t, k2) ON k.tenant_id = x.t AND k.key = x.k2`,
      [keys.map((k) => k.tenantId), keys.map((k) => k.key)],
    );
    for (const r of rows) {
      out.keys.set(keyOf(r.tenant_id, r.key), { requestHash: r.request_hash, resourceId: r.resource_id, statusCode: r.status_code, response: r.response });
    }
  }
  return out;
}
