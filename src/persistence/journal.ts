// The write path and recovery of account actors. A batch of one actor's commands commits in
// one transaction that starts with the shard's epoch guard; recovery is the latest snapshot
// plus the postings after it, read back as events (rows.ts) and replayed through the same
// evolve as the live path.
import type { Pool } from './db.ts';
import type { AccountKind, AccountState, Hold, JournalKind } from '../domain/account.ts';
import { evolve } from '../domain/account.ts';
import type { AccountId, HoldId, Region, TenantId, TransferId } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { GeopayError } from '../domain/errors.ts';
import type { EventRow, JournalRow, StoredAccount, StoredHold, WriteRows } from './rows.ts';
import { emptyRows, eventOfRow } from './rows.ts';
import { holdViewSql, transferViewSql } from './events.ts';

/** One actor's commit: its rows (src/persistence/rows.ts), fenced by its shard's epoch. */
export interface WriteSet extends WriteRows {
  shard: string;
  epoch: bigint;
  nodeId: string;
  snapshot: { accountId: AccountId; seq: number; state: AccountState } | undefined;
}

export function emptyWriteSet(shard: string, epoch: bigint, nodeId: string): WriteSet {
  return { shard, epoch, nodeId, ...emptyRows(), snapshot: undefined };
}

/** A write lost a race it must not win (a key or a transfer claimed elsewhere): redo the batch. */
export class WriteConflict extends Error {}

/**
 * The journal already holds a posting at a seq this write took (its primary key): the actor's
 * state is older than the journal, so it reloads the account and redoes the batch. Fresh reads
 * alone would collide again. A WriteConflict: the statement rolled back for certain.
 */
export class StaleState extends WriteConflict {}

/**
 * GP001: a shard of this write moved past the epoch the write carried. `epochs` are the epochs
 * it carried, so the owner tells a fence of an old write (its epoch has moved on since: keep
 * the shard) from a fence of the epoch it holds (another node took the shard).
 */
export class ShardFenced extends GeopayError {
  constructor(readonly epochs: ReadonlyMap<string, bigint>, opts: { cause: unknown }) {
    super('shard_unavailable', `a shard moved past the epoch of this write (${[...epochs.keys()].join(', ')})`, opts);
  }
}

/** Every statement a commit prepares is named after its shape (see commitSets). */
const COMMIT_STATEMENT = 'geopay_commit';

/** Observes each actor's committed write set. */
export interface CommitObserver { (ws: WriteSet): void }

/** Positional parameters by name of use: `p(value, 'bigint[]')` answers `$n::bigint[]`. */
function params(): { p: (v: unknown, type: string) => string; values: unknown[] } {
  const values: unknown[] = [];
  return { values, p: (v, type) => `$${values.push(v)}::${type}` };
}

const json = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));
const big = (v: bigint): string => v.toString();

/** Every write of a commit waits for its guards: the shards still at the writer's epochs. */
const OK = 'WHERE (SELECT ok FROM held)';

/** The rows of one commit, by table, as commitSets writes them. */
interface CommitRows {
  shards: Map<string, bigint>;
  nodeId: string;
  a: WriteSet['accounts'];
  j: { r: JournalRow; epoch: bigint }[];
  t: WriteSet['newTransfers'];
  u: WriteSet['transferUpdates'];
  k: WriteSet['idempotency'];
  hn: WriteSet['newHolds'];
  hu: WriteSet['holdUpdates'];
  rc: WriteSet['refundClaims'];
  ri: WriteSet['refundClaims'];
  il: WriteSet['inboundLegs'];
  ev: { e: EventRow; shard: string }[];
  sn: { s: NonNullable<WriteSet['snapshot']>; epoch: bigint }[];
}

function commitRows(sets: WriteSet[]): CommitRows {
  const shards = new Map<string, bigint>();
  for (const ws of sets) {
    const e = shards.get(ws.shard);
    // Two epochs of one shard in one statement would be our own bug: one owner, one epoch.
    if (e !== undefined && e !== ws.epoch) throw new Error(`shard ${ws.shard} at two epochs in one commit`);
    shards.set(ws.shard, ws.epoch);
  }
  const claims = sets.flatMap((ws) => ws.refundClaims);
  return {
    shards, nodeId: sets[0]!.nodeId,
    a: sets.flatMap((ws) => ws.accounts),
    j: sets.flatMap((ws) => ws.journal.map((r) => ({ r, epoch: ws.epoch }))),
    t: sets.flatMap((ws) => ws.newTransfers),
    u: sets.flatMap((ws) => ws.transferUpdates),
    k: sets.flatMap((ws) => ws.idempotency),
    hn: sets.flatMap((ws) => ws.newHolds),
    hu: sets.flatMap((ws) => ws.holdUpdates),
    rc: claims.filter((c) => c.on === 'transfer'),
    ri: claims.filter((c) => c.on === 'inbound'),
    il: sets.flatMap((ws) => ws.inboundLegs),
    ev: sets.flatMap((ws) => ws.events.map((e) => ({ e, shard: ws.shard }))),
    sn: sets.flatMap((ws) => (ws.snapshot ? [{ s: ws.snapshot, epoch: ws.epoch }] : [])),
  };
}

type P = ReturnType<typeof params>['p'];
const heldBy = (e: EventRow) => (e.payload.of === 'hold' ? e.payload : undefined);

/**
 * The statement's CTEs that write (or move) rows, each with the rows it needs: a CTE whose rows
 * a commit does not have is left out of its statement. Each returns its SQL given `p`, so the
 * parameters are numbered in the order the CTEs appear.
 */
const WRITES: { name: string; has: (r: CommitRows) => boolean; sql: (r: CommitRows, p: P, shape: ReadonlySet<string>) => string }[] = [
  {
    name: 'acc', has: (r) => r.a.length > 0, sql: ({ a }, p) => `
  INSERT INTO accounts (id, tenant_id, kind, currency, region, shard, overdraft_limit, metadata, created_at)
  SELECT * FROM unnest(${p(a.map((r) => r.id), 'text[]')}, ${p(a.map((r) => r.tenantId), 'text[]')}, ${p(a.map((r) => r.kind), 'text[]')},
    ${p(a.map((r) => r.currency), 'text[]')}, ${p(a.map((r) => r.region), 'text[]')}, ${p(a.map((r) => r.shard), 'text[]')},
    ${p(a.map((r) => big(r.overdraftLimit)), 'bigint[]')}, ${p(a.map((r) => JSON.stringify(r.metadata)), 'jsonb[]')}, ${p(a.map((r) => r.at), 'timestamptz[]')})
  ${OK}`,
  },
  {
    name: 'jr', has: (r) => r.j.length > 0, sql: ({ j, nodeId }, p) => `
  INSERT INTO journal (account_id, seq, kind, transfer_id, amount, balance_after, hold_id, held_delta, held_after, epoch, node_id, created_at)
  SELECT a, s, kd, tr, m, b, h, hd, ha, ep, ${p(nodeId, 'text')}, c
  FROM unnest(${p(j.map(({ r }) => r.accountId), 'text[]')}, ${p(j.map(({ r }) => String(r.seq)), 'bigint[]')},
    ${p(j.map(({ r }) => r.kind), 'text[]')}, ${p(j.map(({ r }) => r.transferId), 'text[]')}, ${p(j.map(({ r }) => big(r.amount)), 'bigint[]')},
    ${p(j.map(({ r }) => big(r.balanceAfter)), 'bigint[]')}, ${p(j.map(({ r }) => r.holdId), 'text[]')}, ${p(j.map(({ r }) => big(r.heldDelta)), 'bigint[]')},
    ${p(j.map(({ r }) => big(r.heldAfter)), 'bigint[]')}, ${p(j.map(({ epoch }) => big(epoch)), 'bigint[]')}, ${p(j.map(({ r }) => r.at), 'timestamptz[]')})
    AS x(a, s, kd, tr, m, b, h, hd, ha, ep, c)
  ${OK}`,
  },
  {
    name: 'tr', has: (r) => r.t.length > 0, sql: ({ t }, p) => `
  INSERT INTO transfers (id, tenant_id, kind, source_id, destination_id, amount, currency, state, metadata, created_at, updated_at, hold_id, refund_of)
  SELECT i, tn, kd, s, d, m, c, 'debited', md, at, at, h, rf
  FROM unnest(${p(t.map((r) => r.id), 'text[]')}, ${p(t.map((r) => r.tenantId), 'text[]')}, ${p(t.map((r) => r.kind), 'text[]')},
    ${p(t.map((r) => r.sourceId), 'text[]')}, ${p(t.map((r) => r.destinationId), 'text[]')}, ${p(t.map((r) => big(r.amount)), 'bigint[]')},
    ${p(t.map((r) => r.currency), 'text[]')}, ${p(t.map((r) => json(r.metadata)), 'jsonb[]')}, ${p(t.map((r) => r.at), 'timestamptz[]')},
    ${p(t.map((r) => r.holdId), 'text[]')}, ${p(t.map((r) => r.refundOf), 'text[]')}) AS x(i, tn, kd, s, d, m, c, md, at, h, rf)
  ${OK}`,
  },
  {
    name: 'tu', has: (r) => r.u.length > 0, sql: ({ u }, p) => `
  UPDATE transfers t SET state = x.st, refusal_code = COALESCE(x.rc, t.refusal_code), updated_at = x.at,
    -- A new state starts the relay's clock afresh, on the database's time (006_relay_fairness.sql).
    state_since = now(), next_attempt_at = NULL, relay_attempts = 0
  FROM unnest(${p(u.map((r) => r.id), 'text[]')}, ${p(u.map((r) => r.from), 'text[]')}, ${p(u.map((r) => r.to), 'text[]')},
    ${p(u.map((r) => r.refusalCode), 'text[]')}, ${p(u.map((r) => r.at), 'timestamptz[]')}) AS x(i, fr, st, rc, at)
  WHERE t.id = x.i AND t.state = x.fr AND (SELECT ok FROM held)
  RETURNING t.*`,
  },
  {
    name: 'rf', has: (r) => r.rc.length > 0, sql: ({ rc }, p) => `
  UPDATE transfers t SET refunded = t.refunded + x.m
  FROM (SELECT i, sum(m) AS m FROM unnest(${p(rc.map((r) => r.originalId), 'text[]')}, ${p(rc.map((r) => big(r.amount)), 'bigint[]')}) AS y(i, m) GROUP BY i) AS x
  WHERE t.id = x.i AND t.state = 'settled' AND t.refunded + x.m <= t.amount AND (SELECT ok FROM held)
  RETURNING 1`,
  },
  {
    name: 'ri', has: (r) => r.ri.length > 0, sql: ({ ri }, p) => `
  UPDATE inbound_legs l SET refunded = l.refunded + x.m
  FROM (SELECT i, sum(m) AS m FROM unnest(${p(ri.map((r) => r.originalId), 'text[]')}, ${p(ri.map((r) => big(r.amount)), 'bigint[]')}) AS y(i, m) GROUP BY i) AS x
  WHERE l.transfer_id = x.i AND l.outcome = 'credited' AND l.refunded + x.m <= l.amount AND (SELECT ok FROM held)
  RETURNING 1`,
  },
  {
    name: 'il', has: (r) => r.il.length > 0, sql: ({ il }, p) => `
  -- A leg applied already in this database conflicts and is not counted: the batch is redone.
  INSERT INTO inbound_legs (transfer_id, account_id, outcome, refusal_code, amount, currency, created_at)
  SELECT * FROM unnest(${p(il.map((r) => r.transferId), 'text[]')}, ${p(il.map((r) => r.accountId), 'text[]')}, ${p(il.map((r) => r.outcome), 'text[]')},
    ${p(il.map((r) => r.refusalCode), 'text[]')}, ${p(il.map((r) => big(r.amount)), 'bigint[]')}, ${p(il.map((r) => r.currency), 'text[]')},
    ${p(il.map((r) => r.at), 'timestamptz[]')})
  ${OK}
  ON CONFLICT DO NOTHING
  RETURNING 1`,
  },
  {
    name: 'hn', has: (r) => r.hn.length > 0, sql: ({ hn }, p) => `
  INSERT INTO holds (id, tenant_id, source_id, destination_id, amount, currency, multi_capture, state, expires_at, metadata, created_at, updated_at, group_id)
  SELECT i, tn, s, d, m, c, mc, 'held', ex, md, at, at, g
  FROM unnest(${p(hn.map((r) => r.id), 'text[]')}, ${p(hn.map((r) => r.tenantId), 'text[]')}, ${p(hn.map((r) => r.sourceId), 'text[]')},
    ${p(hn.map((r) => r.destinationId), 'text[]')}, ${p(hn.map((r) => big(r.amount)), 'bigint[]')}, ${p(hn.map((r) => r.currency), 'text[]')},
    ${p(hn.map((r) => r.multiCapture), 'boolean[]')}, ${p(hn.map((r) => r.expiresAt), 'timestamptz[]')}, ${p(hn.map((r) => json(r.metadata)), 'jsonb[]')},
    ${p(hn.map((r) => r.at), 'timestamptz[]')}, ${p(hn.map((r) => r.groupId), 'text[]')}) AS x(i, tn, s, d, m, c, mc, ex, md, at, g)
  ${OK}`,
  },
  {
    name: 'hu', has: (r) => r.hu.length > 0, sql: ({ hu }, p) => `
  UPDATE holds h SET captured = x.cp, state = x.st, updated_at = x.at
  FROM unnest(${p(hu.map((r) => r.id), 'text[]')}, ${p(hu.map((r) => big(r.captured)), 'bigint[]')}, ${p(hu.map((r) => r.state), 'text[]')},
    ${p(hu.map((r) => r.at), 'timestamptz[]')}) AS x(i, cp, st, at)
  WHERE h.id = x.i AND h.state = 'held' AND (SELECT ok FROM held)
  RETURNING h.*`,
  },
  // The commit's ledger events (013_events.sql): each account's numbered on from its last, in
  // the order its actor made them; the event of a row moved here shows it as this statement
  // leaves it (tu, hu: present whenever an event names such a row, since the same commit moves
  // it). A row that did not move (a lost race) gives 'null', not an error that would hide the
  // GP002 of the check below, and the statement rolls back all the same.
  {
    name: 'ev', has: (r) => r.ev.length > 0, sql: ({ ev }, p, shape) => `
  INSERT INTO ledger_events (account_id, n, commit_xid, ord, shard, tenant_id, type, seq, payload, created_at)
  SELECT x.a, prev.n + row_number() OVER (PARTITION BY x.a ORDER BY x.o), pg_current_xact_id(), x.o, x.sh, x.tn, x.ty, x.s,
    CASE WHEN x.pl IS NOT NULL THEN x.pl
      ${shape.has('tu') ? `WHEN tv.id IS NOT NULL THEN ${transferViewSql('tv')}` : ''}
      ${shape.has('hu') ? `WHEN hv.id IS NOT NULL THEN ${holdViewSql('hv', { captured: 'x.hc', state: 'x.hs', at: 'x.c' })}` : ''}
      ELSE 'null'::jsonb END,
    x.c
  FROM unnest(${p(ev.map(({ e }) => e.accountId), 'text[]')}, ${p(ev.map(({ shard }) => shard), 'text[]')}, ${p(ev.map(({ e }) => e.tenantId), 'text[]')},
    ${p(ev.map(({ e }) => e.type), 'text[]')}, ${p(ev.map(({ e }) => String(e.seq)), 'bigint[]')},
    ${p(ev.map(({ e }) => (e.payload.of === 'view' ? JSON.stringify(e.payload.view) : null)), 'jsonb[]')},
    ${p(ev.map(({ e }) => (e.payload.of === 'transfer' ? e.payload.id : null)), 'text[]')}, ${p(ev.map(({ e }) => heldBy(e)?.id ?? null), 'text[]')},
    ${p(ev.map(({ e }) => { const h = heldBy(e); return h ? big(h.captured) : null; }), 'bigint[]')}, ${p(ev.map(({ e }) => heldBy(e)?.state ?? null), 'text[]')},
    ${p(ev.map(({ e }) => e.at), 'timestamptz[]')}) WITH ORDINALITY AS x(a, sh, tn, ty, s, pl, rt, rh, hc, hs, c, o)
  CROSS JOIN LATERAL (SELECT COALESCE(max(l.n), 0) AS n FROM ledger_events l WHERE l.account_id = x.a) prev
  ${shape.has('tu') ? 'LEFT JOIN tu tv ON tv.id = x.rt' : ''}
  ${shape.has('hu') ? 'LEFT JOIN hu hv ON hv.id = x.rh' : ''}
  ${OK}`,
  },
  {
    name: 'ik', has: (r) => r.k.length > 0, sql: ({ k }, p) => `
  INSERT INTO idempotency_keys (tenant_id, key, request_hash, resource_id, status_code, response)
  SELECT * FROM unnest(${p(k.map((r) => r.tenantId), 'text[]')}, ${p(k.map((r) => r.key), 'text[]')}, ${p(k.map((r) => r.requestHash), 'text[]')},
    ${p(k.map((r) => r.resourceId), 'text[]')}, ${p(k.map((r) => r.statusCode), 'int[]')}, ${p(k.map((r) => json(r.response)), 'jsonb[]')})
  ${OK}
  ON CONFLICT DO NOTHING
  RETURNING 1`,
  },
  {
    name: 'sn', has: (r) => r.sn.length > 0, sql: ({ sn }, p) => `
  INSERT INTO snapshots (account_id, seq, state, epoch)
  SELECT * FROM unnest(${p(sn.map(({ s }) => s.accountId), 'text[]')}, ${p(sn.map(({ s }) => String(s.seq)), 'bigint[]')},
    ${p(sn.map(({ s }) => JSON.stringify(stateToJson(s.state))), 'jsonb[]')}, ${p(sn.map(({ epoch }) => big(epoch)), 'bigint[]')})
  ${OK}
  ON CONFLICT (account_id) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state, epoch = EXCLUDED.epoch, created_at = now()
  WHERE snapshots.seq < EXCLUDED.seq`,
  },
];

/** The conditional writes whose rows the check counts against what the commit expected. */
const CONDITIONAL = ['tu', 'hu', 'rf', 'ri', 'il'];

/**
 * The commit's statement: the guard, then only the CTEs whose rows this commit has (a commit
 * that only debits plans four writes, not eleven), then the check. Its name is its shape, so
 * every shape is prepared once per connection and planned with each execution's arrays.
 */
function commitStatement(r: CommitRows): { name: string; text: string; values: unknown[] } {
  const { p, values } = params();
  const used = WRITES.filter((w) => w.has(r));
  const shape = new Set(used.map((w) => w.name));
  const guard = `guard AS (
  SELECT s.id FROM shards s JOIN unnest(${p([...r.shards.keys()], 'text[]')}, ${p([...r.shards.values()].map(big), 'bigint[]')}) AS g(id, ep)
    ON s.id = g.id AND s.epoch = g.ep
  FOR SHARE OF s
), held AS (
  SELECT count(*) = ${p(r.shards.size, 'int')} AS ok FROM guard
)`;
  const ctes = [guard, ...used.map((w) => `${w.name} AS (${w.sql(r, p, shape)}\n)`)];
  const count = (names: string[]) => names.filter((n) => shape.has(n)).map((n) => `(SELECT count(*) FROM ${n})`).join(' + ') || '0';
  const expectedUpdates = r.u.length + r.hu.length + new Set(r.rc.map((c) => c.originalId)).size + new Set(r.ri.map((c) => c.originalId)).size + r.il.length;
  const text = `WITH ${ctes.join(', ')}
SELECT geopay_commit_check(CASE WHEN (SELECT ok FROM held) THEN 1 ELSE 0 END,
  ${count(CONDITIONAL)}, ${p(expectedUpdates, 'int')}, ${count(['ik'])}, ${p(r.k.length, 'int')}) AS ok`;
  return { name: `${COMMIT_STATEMENT}_${used.map((w) => w.name).join('_') || 'guard'}`, text, values };
}

/**
 * Commits the write sets of one or many actors (node-level group commit) in ONE statement:
 * one round trip, one transaction. Every write is conditional on the guards (each shard
 * touched still at the writer's epoch, locked FOR SHARE so an epoch bump waits for this
 * write); the final check aborts the whole statement when a guard or a conditional write did
 * not hold (GP001 fenced, GP002 a lost race), so it commits all of it or none.
 */
export async function commitSets(pool: Pool, sets: WriteSet[]): Promise<void> {
  const rows = commitRows(sets);
  try {
    // Only the arrays differ between commits of one shape: its statement is prepared once per
    // connection, not parsed again on each.
    await pool.query(commitStatement(rows));
  } catch (err) {
    const { code, constraint } = err as { code?: string; constraint?: string };
    // A leg applied already (an optimistic redelivery): redo the batch with fresh reads.
    if (code === '23505' && constraint === 'journal_transfer_once') throw new WriteConflict('a transfer leg was applied already', { cause: err });
    // The id of a keyed request's transfer or hold is derived from the request: a retry (its key
    // expired, or claimed on another node) finds the first one this way; redone, it answers it.
    if (code === '23505' && (constraint === 'transfers_pkey' || constraint === 'holds_pkey')) throw new WriteConflict('a transfer or hold of this id exists', { cause: err });
    if (code === '23505' && constraint === 'journal_pkey') throw new StaleState('a posting of this seq exists: the account moved on without this actor', { cause: err });
    // The same, seen by the events: another commit of this account numbered its events meanwhile.
    if (code === '23505' && constraint === 'ledger_events_pkey') throw new StaleState('an event of this number exists: the account moved on without this actor', { cause: err });
    if (code === 'GP001') throw new ShardFenced(rows.shards, { cause: err });
    if (code === 'GP002') throw new WriteConflict('a key, a transfer or a hold was claimed under this batch', { cause: err });
    throw err;
  }
}

export function stateToJson(s: AccountState): Record<string, unknown> {
  const holds = Object.fromEntries(Object.entries(s.holds).map(([id, h]) => [id, { ...h, amount: h.amount.toString(), remaining: h.remaining.toString() }]));
  return { ...s, balance: s.balance.toString(), held: s.held.toString(), overdraftLimit: s.overdraftLimit.toString(), holds };
}

export function stateFromJson(j: Record<string, unknown>): AccountState {
  const raw = (j.holds ?? {}) as Record<string, Record<string, unknown>>;
  const holds: Record<string, Hold> = Object.fromEntries(Object.entries(raw).map(([id, h]) => [id, {
    ...(h as unknown as Hold), amount: BigInt(h.amount as string), remaining: BigInt(h.remaining as string),
  }]));
  return {
    ...(j as unknown as AccountState), balance: BigInt(j.balance as string), held: BigInt((j.held as string | undefined) ?? '0'),
    overdraftLimit: BigInt(j.overdraftLimit as string), holds,
  };
}

export interface Loaded {
  state: AccountState | undefined;
  lastSnapshotSeq: number;
}

interface AccountDbRow {
  id: string; tenant_id: string | null; kind: AccountKind; currency: string; region: string;
  overdraft_limit: bigint; metadata: Record<string, unknown>; created_at: Date;
}

interface JournalDbRow {
  seq: bigint; kind: JournalKind; transfer_id: string | null; amount: bigint; balance_after: bigint;
  hold_id: string | null; held_delta: bigint; held_after: bigint; created_at: Date;
}

interface HoldDbRow { id: string; destination_id: string; multi_capture: boolean; expires_at: Date; state: string }

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
    'SELECT seq, kind, transfer_id, amount, balance_after, hold_id, held_delta, held_after, created_at FROM journal WHERE account_id = $1 AND seq > $2 ORDER BY seq',
    [id, lastSnapshotSeq],
  );
  if (rows.length === 0) return { state, lastSnapshotSeq };
  let account: StoredAccount | undefined;
  if (state === undefined) {
    const a = await pool.query<AccountDbRow>('SELECT * FROM accounts WHERE id = $1', [id]);
    account = a.rows[0] && storedAccount(a.rows[0]);
  }
  const holdIds = [...new Set(rows.flatMap((r) => (r.hold_id ? [r.hold_id] : [])))];
  const holds = new Map<string, StoredHold>();
  if (holdIds.length > 0) {
    const hr = await pool.query<HoldDbRow>('SELECT id, destination_id, multi_capture, expires_at, state FROM holds WHERE id = ANY($1::text[])', [holdIds]);
    for (const h of hr.rows) holds.set(h.id, storedHold(h));
  }
  for (const dbRow of rows) {
    const r = journalRow(id, dbRow);
    state = evolve(state, eventOfRow(r, account, holds));
    if (state.seq !== r.seq || state.balance !== r.balanceAfter || state.held !== r.heldAfter) {
      throw new Error(`journal of ${id} disagrees with replay at seq ${r.seq}`);
    }
  }
  return { state, lastSnapshotSeq };
}

const journalRow = (accountId: AccountId, r: JournalDbRow): JournalRow => ({
  accountId, seq: Number(r.seq), kind: r.kind, transferId: r.transfer_id as TransferId | null, amount: r.amount,
  balanceAfter: r.balance_after, holdId: r.hold_id as HoldId | null, heldDelta: r.held_delta, heldAfter: r.held_after,
  at: r.created_at.toISOString(),
});

const storedAccount = (a: AccountDbRow): StoredAccount => ({
  kind: a.kind, tenantId: a.tenant_id as TenantId | null, currency: a.currency as Currency, region: a.region as Region,
  overdraftLimit: a.overdraft_limit, metadata: a.metadata, at: a.created_at.toISOString(),
});

const storedHold = (h: HoldDbRow): StoredHold => ({
  destinationId: h.destination_id as AccountId, multiCapture: h.multi_capture, expiresAt: h.expires_at.toISOString(), state: h.state,
});

export interface Prefetched {
  transfers: Map<string, { state: string; amount: bigint; refunded: bigint }>;
  /** This database's inbound legs of the cross-region transfers asked about (migration 011). */
  inbound: Map<string, { outcome: 'credited' | 'refused'; refusalCode: string | null; amount: bigint; refunded: bigint }>;
  keys: Map<string, StoredKey>;
  /** Those of the holds asked about that exist (none asked: absent). */
  holds?: ReadonlySet<string>;
}

export interface StoredKey {
  requestHash: string; resourceId: string | null; statusCode: number | null; response: unknown;
}

export const keyOf = (tenantId: string, key: string): string => `${tenantId}\u0000${key}`;

/** What a batch must know before deciding: states of transfers it would credit or return (or
 * create, under a derived id), idempotency keys already used, and which of the holds it would
 * place exist already. The actor is the only writer of these transitions. */
export async function prefetch(pool: Pool, transferIds: string[], keys: { tenantId: string; key: string }[], holdIds: string[] = []): Promise<Prefetched> {
  const out: Prefetched = { transfers: new Map(), inbound: new Map(), keys: new Map() };
  if (holdIds.length > 0) {
    const { rows } = await pool.query<{ id: string }>('SELECT id FROM holds WHERE id = ANY($1::text[])', [holdIds]);
    out.holds = new Set(rows.map((r) => r.id));
  }
  if (transferIds.length > 0) {
    const { rows } = await pool.query<{ id: string; state: string; amount: bigint; refunded: bigint }>(
      'SELECT id, state, amount, refunded FROM transfers WHERE id = ANY($1::text[])', [transferIds]);
    for (const r of rows) out.transfers.set(r.id, { state: r.state, amount: r.amount, refunded: r.refunded });
    const legs = await pool.query<{ transfer_id: string; outcome: 'credited' | 'refused'; refusal_code: string | null; amount: bigint; refunded: bigint }>(
      'SELECT transfer_id, outcome, refusal_code, amount, refunded FROM inbound_legs WHERE transfer_id = ANY($1::text[])', [transferIds]);
    for (const r of legs.rows) out.inbound.set(r.transfer_id, { outcome: r.outcome, refusalCode: r.refusal_code, amount: r.amount, refunded: r.refunded });
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
