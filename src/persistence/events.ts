// The ledger events (migration 013): the views the commit statement builds of the rows it moves,
// and the reads. One account's events in its own order (n); a tenant's in its region database's
// commit order, up to the horizon of transactions still running; and, for a publisher, each
// shard's events after the consumer's cursor, with the cursor's move forward.
import type { Pool } from './db.ts';

/** An event's place in its region database's order: its commit's transaction id (xid8, as text) and its place in that statement. */
export interface EventPosition { xid: string; ord: number }

/** A ledger event as stored. JSON-safe (it travels in region reads): numbers and strings only. */
export interface StoredEvent {
  accountId: string;
  /** Its number in the account's order, from 1, gapless. */
  n: number;
  type: string;
  tenantId: string | null;
  seq: number;
  shard: string;
  payload: unknown;
  createdAt: string;
  position: EventPosition;
}

/** Where a consumer has published a shard up to. */
export interface PublishedMark { shard: string; position: EventPosition }

/** The API's timestamp (Date#toISOString: UTC, milliseconds) of a timestamptz expression. */
const iso = (ts: string): string => `to_char(${ts} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/**
 * The TransferView (src/domain/views.ts) of a transfers row `t`, as GET /v1/transfers/:id shows
 * it (queries.ts transferRowView): for the row a commit statement moves, read from its RETURNING.
 */
export function transferViewSql(t: string): string {
  return `jsonb_build_object('id', ${t}.id, 'kind', ${t}.kind, 'sourceAccountId', ${t}.source_id, 'destinationAccountId', ${t}.destination_id,
    'amount', ${t}.amount::text, 'currency', ${t}.currency, 'state', ${t}.state, 'refusalCode', ${t}.refusal_code, 'metadata', ${t}.metadata,
    'holdId', ${t}.hold_id, 'refundOf', ${t}.refund_of, 'refunded', ${t}.refunded::text, 'createdAt', ${iso(`${t}.created_at`)}, 'updatedAt', ${iso(`${t}.updated_at`)})`;
}

/**
 * The HoldView of a holds row `h` as one event left it: `captured` and `state` are the event's
 * (a commit writes a hold row once, with its last event's), `at` its time; the rest is the row's
 * (queries.ts getHold shows the same).
 */
export function holdViewSql(h: string, ev: { captured: string; state: string; at: string }): string {
  return `jsonb_build_object('id', ${h}.id, 'sourceAccountId', ${h}.source_id, 'destinationAccountId', ${h}.destination_id, 'amount', ${h}.amount::text,
    'captured', ${ev.captured}::text, 'remaining', (CASE WHEN ${ev.state} = 'held' THEN ${h}.amount - ${ev.captured} ELSE 0 END)::text,
    'currency', ${h}.currency, 'multiCapture', ${h}.multi_capture, 'state', ${ev.state}, 'expiresAt', ${iso(`${h}.expires_at`)},
    'metadata', ${h}.metadata, 'createdAt', ${iso(`${h}.created_at`)}, 'updatedAt', ${iso(ev.at)})`;
}

interface EventDbRow {
  account_id: string; n: bigint; xid: string; ord: number; shard: string; tenant_id: string | null; type: string; seq: bigint;
  payload: unknown; created_at: Date;
}

const COLUMNS = 'e.account_id, e.n, e.commit_xid::text AS xid, e.ord, e.shard, e.tenant_id, e.type, e.seq, e.payload, e.created_at';

/**
 * Below this, every transaction has ended: an event read under it can no longer be preceded by
 * one committed later. (Transactions that write nothing have no id and never hold it back.)
 */
const HORIZON = 'pg_snapshot_xmin(pg_current_snapshot())';

const storedEvent = (r: EventDbRow): StoredEvent => ({
  accountId: r.account_id, n: Number(r.n), type: r.type, tenantId: r.tenant_id, seq: Number(r.seq), shard: r.shard,
  payload: r.payload, createdAt: r.created_at.toISOString(), position: { xid: r.xid, ord: r.ord },
});

/**
 * An account's events after its `afterN`th, in its order. No horizon: its actor has one commit
 * in flight at a time, so once an event is seen every earlier one of the account is.
 */
export async function accountEvents(pool: Pool, accountId: string, afterN: number, limit: number): Promise<StoredEvent[]> {
  const { rows } = await pool.query<EventDbRow>(
    `SELECT ${COLUMNS} FROM ledger_events e WHERE e.account_id = $1 AND e.n > $2 ORDER BY e.n LIMIT $3`, [accountId, afterN, limit],
  );
  return rows.map(storedEvent);
}

/** A tenant's events of this database after `after` (null: from the first), in commit order, below the horizon. */
export async function tenantEvents(pool: Pool, tenantId: string, after: EventPosition | null, limit: number): Promise<StoredEvent[]> {
  const { rows } = await pool.query<EventDbRow>(
    `SELECT ${COLUMNS} FROM ledger_events e
     WHERE e.tenant_id = $1 AND (e.commit_xid, e.ord) > ($2::xid8, $3::int) AND e.commit_xid < ${HORIZON}
     ORDER BY e.commit_xid, e.ord LIMIT $4`,
    [tenantId, after?.xid ?? '0', after?.ord ?? 0, limit],
  );
  return rows.map(storedEvent);
}

/**
 * The events a consumer takes: those of these tenants, each of the types given ('' for every
 * type). The others it passes over: it sees only where they are, to move its cursor past them.
 */
export interface EventInterest { tenants: readonly string[]; types: readonly string[] }

/** An event a consumer's interest passed over: its place only, read without its payload. */
export interface PassedEvent { passed: true; shard: string; position: EventPosition }

export type FeedEvent = StoredEvent | PassedEvent;

export const isPassed = (e: FeedEvent): e is PassedEvent => 'passed' in e;

interface FeedDbRow extends Omit<EventDbRow, 'payload' | 'created_at'> { wanted: boolean; payload: unknown; created_at: Date | null }

/**
 * For a publisher: each shard's events after `consumer`'s cursor of it (none yet: from the
 * first), in commit order, below the horizon, at most `limitPerShard` a shard. Publish them in
 * this order per shard, then markPublished: a crash in between publishes them again, never skips.
 * With an `interest`, an event outside it comes as a PassedEvent: its payload is neither sent
 * nor parsed, and the cursor moves past it all the same.
 */
export async function unpublishedEvents(pool: Pool, consumer: string, shards: readonly string[], limitPerShard: number, interest?: EventInterest): Promise<FeedEvent[]> {
  const { rows } = await pool.query<FeedDbRow>(
    `SELECT e.account_id, e.n, e.commit_xid::text AS xid, e.ord, e.shard, e.tenant_id, e.type, e.seq, e.wanted,
       CASE WHEN e.wanted THEN e.payload END AS payload, CASE WHEN e.wanted THEN e.created_at END AS created_at
     FROM unnest($2::text[]) AS s(id)
     LEFT JOIN ledger_event_cursors c ON c.consumer = $1 AND c.shard = s.id
     CROSS JOIN LATERAL (
       SELECT x.*, ($4::text[] IS NULL OR EXISTS (
         SELECT 1 FROM unnest($4::text[], $5::text[]) AS w(t, ty) WHERE w.t = x.tenant_id AND (w.ty = '' OR w.ty = x.type))) AS wanted
       FROM ledger_events x
       WHERE x.shard = s.id AND (x.commit_xid, x.ord) > (COALESCE(c.commit_xid, '0'::xid8), COALESCE(c.ord, 0)) AND x.commit_xid < ${HORIZON}
       ORDER BY x.commit_xid, x.ord LIMIT $3) e
     ORDER BY e.shard, e.commit_xid, e.ord`,
    [consumer, shards, limitPerShard, interest?.tenants ?? null, interest?.types ?? null],
  );
  // A wanted row has its payload and time: it is an EventDbRow.
  return rows.map((r): FeedEvent => (r.wanted
    ? storedEvent(r as EventDbRow)
    : { passed: true, shard: r.shard, position: { xid: r.xid, ord: r.ord } }));
}

/** Moves `consumer`'s cursor of each shard forward to the position given; never back (a late or repeated mark is a no-op). */
export async function markPublished(pool: Pool, consumer: string, marks: readonly PublishedMark[]): Promise<void> {
  if (marks.length === 0) return;
  await pool.query(
    `INSERT INTO ledger_event_cursors (consumer, shard, commit_xid, ord)
     SELECT DISTINCT ON (m.s) $1, m.s, m.x::xid8, m.o FROM unnest($2::text[], $3::text[], $4::int[]) AS m(s, x, o)
     ORDER BY m.s, m.x::xid8 DESC, m.o DESC
     ON CONFLICT (consumer, shard) DO UPDATE SET commit_xid = EXCLUDED.commit_xid, ord = EXCLUDED.ord, updated_at = now()
     WHERE (ledger_event_cursors.commit_xid, ledger_event_cursors.ord) < (EXCLUDED.commit_xid, EXCLUDED.ord)`,
    [consumer, marks.map((m) => m.shard), marks.map((m) => m.position.xid), marks.map((m) => m.position.ord)],
  );
}
