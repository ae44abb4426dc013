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

/** Observes each actor's committed write set. */
export interface CommitObserver { (ws: WriteSet): void }

// One statement, so one round trip and one transaction, for the write sets of one or many
// actors (node-level group commit). Every write is conditional on the guards (each shard
// touched still at the writer's epoch, locked FOR SHARE so an epoch bump waits for this
// write); the final check aborts the whole statement when a guard or a conditional write did
// not hold.
const COMMIT_SQL = `
WITH guard AS (
  SELECT s.id FROM shards s JOIN unnest($1::text[], $2::bigint[]) AS g(id, ep) ON s.id = g.id AND s.epoch = g.ep
  FOR SHARE OF s
), held AS (
  SELECT count(*) = cardinality($1::text[]) AS ok FROM guard
), acc AS (
  INSERT INTO accounts (id, tenant_id, kind, currency, region, shard, overdraft_limit, metadata, created_at)
  SELECT i, tn, k, c, r, sh, o, md, at
  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::jsonb[], $10::timestamptz[], $11::text[])
    AS x(i, tn, k, c, r, o, md, at, sh)
  WHERE (SELECT ok FROM held)
), jr AS (
  INSERT INTO journal (account_id, seq, kind, transfer_id, amount, balance_after, epoch, node_id, created_at)
  SELECT a, s, k, t, m, b, ep, $44, c
  FROM unnest($12::text[], $13::bigint[], $14::text[], $15::text[], $16::bigint[], $17::bigint[], $18::timestamptz[], $45::bigint[])
    AS x(a, s, k, t, m, b, c, ep)
  WHERE (SELECT ok FROM held)
), tr AS (
  INSERT INTO transfers (id, tenant_id, kind, source_id, destination_id, amount, currency, state, metadata, created_at, updated_at)
  SELECT i, tn, k, s, d, m, c, 'debited', md, at, at
  FROM unnest($19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::bigint[], $25::text[], $26::jsonb[], $27::timestamptz[])
    AS x(i, tn, k, s, d, m, c, md, at)
  WHERE (SELECT ok FROM held)
), tu AS (
  UPDATE transfers t SET state = x.st, refusal_code = COALESCE(x.rc, t.refusal_code), updated_at = x.at
  FROM unnest($28::text[], $29::text[], $30::text[], $31::text[], $32::timestamptz[]) AS x(i, fr, st, rc, at)
  WHERE t.id = x.i AND t.state = x.fr AND (SELECT ok FROM held)
  RETURNING 1
), ik AS (
  INSERT INTO idempotency_keys (tenant_id, key, request_hash, resource_id, status_code, response)
  SELECT tn, k, h, r, sc, rs
  FROM unnest($33::text[], $34::text[], $35::text[], $36::text[], $37::int[], $38::jsonb[]) AS x(tn, k, h, r, sc, rs)
  WHERE (SELECT ok FROM held)
  ON CONFLICT DO NOTHING
  RETURNING 1
), sn AS (
  INSERT INTO snapshots (account_id, seq, state, epoch)
  SELECT a, s, st, ep FROM unnest($39::text[], $40::bigint[], $41::jsonb[], $46::bigint[]) AS x(a, s, st, ep)
  WHERE (SELECT ok FROM held)
  ON CONFLICT (account_id) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state, epoch = EXCLUDED.epoch, created_at = now()
  WHERE snapshots.seq < EXCLUDED.seq
)
SELECT geopay_commit_check(CASE WHEN (SELECT ok FROM held) THEN 1 ELSE 0 END, (SELECT count(*) FROM tu), $42, (SELECT count(*) FROM ik), $43) AS ok`;

const json = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));

/** Commits the write sets of one or more actors in one transaction, or none of them. */
export async function commitSets(pool: Pool, sets: WriteSet[]): Promise<void> {
  const shards = new Map<string, bigint>();
  for (const ws of sets) {
    const e = shards.get(ws.shard);
    // Two epochs of one shard in one statement would be our own bug: one owner, one epoch.
    if (e !== undefined && e !== ws.epoch) throw new Error(`shard ${ws.shard} at two epochs in one commit`);
    shards.set(ws.shard, ws.epoch);
  }
  const a = sets.flatMap((ws) => ws.accounts);
  const j = sets.flatMap((ws) => ws.journal.map((r) => ({ r, epoch: ws.epoch })));
  const t = sets.flatMap((ws) => ws.newTransfers);
  const u = sets.flatMap((ws) => ws.transferUpdates);
  const k = sets.flatMap((ws) => ws.idempotency);
  const sn = sets.flatMap((ws) => (ws.snapshot ? [{ s: ws.snapshot, epoch: ws.epoch }] : []));
  const nodeId = sets[0]!.nodeId;
  try {
    await pool.query(COMMIT_SQL, [
      [...shards.keys()], [...shards.values()].map(String),
      a.map((r) => r.id), a.map((r) => r.tenantId), a.map((r) => r.kind), a.map((r) => r.currency), a.map((r) => r.region),
      a.map((r) => r.overdraftLimit.toString()), a.map((r) => JSON.stringify(r.metadata)), a.map((r) => r.at), a.map((r) => r.shard),
      j.map(({ r }) => r.accountId), j.map(({ r }) => String(r.seq)), j.map(({ r }) => r.kind), j.map(({ r }) => r.transferId),
      j.map(({ r }) => r.amount.toString()), j.map(({ r }) => r.balanceAfter.toString()), j.map(({ r }) => r.at),
      t.map((r) => r.id), t.map((r) => r.tenantId), t.map((r) => r.kind), t.map((r) => r.sourceId), t.map((r) => r.destinationId),
      t.map((r) => r.amount.toString()), t.map((r) => r.currency), t.map((r) => json(r.metadata)), t.map((r) => r.at),
      u.map((r) => r.id), u.map((r) => r.from), u.map((r) => r.to), u.map((r) => r.refusalCode), u.map((r) => r.at),
      k.map((r) => r.tenantId), k.map((r) => r.key), k.map((r) => r.requestHash), k.map((r) => r.resourceId),
      k.map((r) => r.statusCode), k.map((r) => json(r.response)),
      sn.map(({ s }) => s.accountId), sn.map(({ s }) => String(s.seq)), sn.map(({ s }) => JSON.stringify(stateToJson(s.state))),
      u.length, k.length, nodeId, j.map(({ epoch }) => epoch.toString()), sn.map(({ epoch }) => epoch.toString()),
    ]);
  } catch (err) {
    const { code, constraint } = err as { code?: string; constraint?: string };
    // A leg applied already (an optimistic redelivery): redo the batch with fresh reads.
    if (code === '23505' && constraint === 'journal_transfer_once') throw new WriteConflict('a transfer leg was applied already', { cause: err });
    if (code === 'GP001') throw new GeopayError('shard_unavailable', `a shard moved past the epoch of this write (${[...shards.keys()].join(', ')})`, { cause: err });
    if (code === 'GP002') throw new WriteConflict('a key or a transfer was claimed under this batch', { cause: err });
    throw err;
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
