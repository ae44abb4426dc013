// Webhook endpoints, deliveries and attempts (migration 012). Every time comes in from the
// dispatcher's clock, so the retry policy, the claim and the tests share one notion of now.
// The claim keeps each account's deliveries to an endpoint in seq order: it never hands out a
// delivery while an earlier one of the same account to the same endpoint is still pending.
import assert from 'node:assert/strict';
import type { Client, Pool } from './db.ts';
import type { EventInterest } from './events.ts';

export interface EndpointRow {
  id: string; tenantId: string; url: string; eventTypes: string[];
  secret: string; previousSecret: string | null; previousSecretExpiresAt: Date | null;
  disabledAt: Date | null; disabledReason: string | null; createdAt: Date;
}

interface EndpointDbRow {
  id: string; tenant_id: string; url: string; event_types: string[]; secret: string; previous_secret: string | null;
  previous_secret_expires_at: Date | null; disabled_at: Date | null; disabled_reason: string | null; created_at: Date;
}

const endpointRow = (r: EndpointDbRow): EndpointRow => ({
  id: r.id, tenantId: r.tenant_id, url: r.url, eventTypes: r.event_types, secret: r.secret, previousSecret: r.previous_secret,
  previousSecretExpiresAt: r.previous_secret_expires_at, disabledAt: r.disabled_at, disabledReason: r.disabled_reason, createdAt: r.created_at,
});

const ENDPOINT_COLUMNS = 'id, tenant_id, url, event_types, secret, previous_secret, previous_secret_expires_at, disabled_at, disabled_reason, created_at';
/** An endpoint that takes deliveries: neither deleted nor disabled. */
const LIVE = 'deleted_at IS NULL AND disabled_at IS NULL';
const MAX_PAGE = 1_000;
const assertLimit = (limit: number): void => assert.ok(Number.isInteger(limit) && limit >= 1 && limit <= MAX_PAGE, 'a page of 1-1000 rows');

export interface NewEndpoint { id: string; tenantId: string; url: string; eventTypes: string[]; secret: string; now: Date }

/** On the pool, or on a client inside a keyed create's transaction (queries.ts createWebhookEndpointOnce). */
export async function createEndpoint(pool: Pool | Client, e: NewEndpoint): Promise<EndpointRow> {
  const { rows } = await pool.query<EndpointDbRow>(
    `INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${ENDPOINT_COLUMNS}`,
    [e.id, e.tenantId, e.url, e.eventTypes, e.secret, e.now],
  );
  return endpointRow(rows[0]!);
}

export async function getEndpoint(pool: Pool, tenantId: string, id: string): Promise<EndpointRow | undefined> {
  const { rows } = await pool.query<EndpointDbRow>(
    `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL`, [id, tenantId],
  );
  return rows[0] ? endpointRow(rows[0]) : undefined;
}

/** A tenant's endpoints oldest first (ids are time-sortable); the cursor is the last id seen. */
export async function listEndpoints(pool: Pool, tenantId: string, page: { limit: number; afterId?: string }): Promise<{ data: EndpointRow[]; nextCursor: string | null }> {
  assertLimit(page.limit);
  const { rows } = await pool.query<EndpointDbRow>(
    `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR id > $2)
     ORDER BY id LIMIT $3`, [tenantId, page.afterId ?? null, page.limit + 1],
  );
  const data = rows.slice(0, page.limit).map(endpointRow);
  return { data, nextCursor: rows.length > page.limit ? data[data.length - 1]!.id : null };
}

/** Soft delete: the row stays for its deliveries' history; its pending deliveries stop. */
export async function deleteEndpoint(pool: Pool, tenantId: string, id: string, now: Date): Promise<boolean> {
  return stopEndpoint(pool, tenantId, id, 'UPDATE webhook_endpoints SET deleted_at = $3 WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL', [now]);
}

/** The endpoint, disabled (410 Gone, or by hand), takes deliveries again; those it missed stay `disabled` until redelivered. */
export async function enableEndpoint(pool: Pool, tenantId: string, id: string): Promise<boolean> {
  const r = await pool.query(
    'UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL', [id, tenantId],
  );
  return r.rowCount === 1;
}

export async function disableEndpoint(pool: Pool, tenantId: string, id: string, reason: string, now: Date): Promise<boolean> {
  return stopEndpoint(pool, tenantId, id, `UPDATE webhook_endpoints SET disabled_at = $3, disabled_reason = $4 WHERE id = $1 AND tenant_id = $2 AND ${LIVE}`, [now, reason]);
}

/** Runs `update` on the endpoint and, if it changed it, marks the endpoint's pending deliveries `disabled`, in one transaction. */
async function stopEndpoint(pool: Pool, tenantId: string, id: string, update: string, extra: unknown[]): Promise<boolean> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const r = await client.query(update, [id, tenantId, ...extra]);
    if (r.rowCount === 1) await client.query("UPDATE webhook_deliveries SET state = 'disabled', next_attempt_at = NULL WHERE endpoint_id = $1 AND state = 'pending'", [id]);
    await client.query('COMMIT');
    return r.rowCount === 1;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * Makes `newSecret` current; the secret it replaces stays valid until `now + overlapMs`. Only
 * one previous secret is kept: a second rotation within the overlap ends the older one at once.
 */
export async function rotateEndpointSecret(pool: Pool | Client, r: { tenantId: string; id: string; newSecret: string; now: Date; overlapMs: number }): Promise<EndpointRow | undefined> {
  assert.ok(Number.isInteger(r.overlapMs) && r.overlapMs >= 0, 'overlapMs >= 0');
  const { rows } = await pool.query<EndpointDbRow>(
    `UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $4::timestamptz + make_interval(secs => $5::float8 / 1000), secret = $3
     WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING ${ENDPOINT_COLUMNS}`,
    [r.id, r.tenantId, r.newSecret, r.now, r.overlapMs],
  );
  return rows[0] ? endpointRow(rows[0]) : undefined;
}

/** The tenant's live endpoints that take `eventType` (an empty filter takes every type). */
export async function matchingEndpoints(pool: Pool, tenantId: string, eventType: string): Promise<EndpointRow[]> {
  const { rows } = await pool.query<EndpointDbRow>(
    `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints
     WHERE tenant_id = $1 AND ${LIVE} AND (cardinality(event_types) = 0 OR $2 = ANY(event_types))
     ORDER BY id`, [tenantId, eventType],
  );
  return rows.map(endpointRow);
}

/**
 * What the live endpoints of every tenant take, as the webhook feed's interest: a pair per
 * (tenant, event type), '' for an endpoint taking every type. Undefined past `maxEndpoints`
 * live endpoints, where the filter would cost the feed's query more than it saves.
 */
export async function endpointInterest(pool: Pool, maxEndpoints: number): Promise<EventInterest | undefined> {
  const { rows } = await pool.query<{ tenant_id: string; event_types: string[] }>(
    `SELECT tenant_id, event_types FROM webhook_endpoints WHERE ${LIVE} LIMIT $1`, [maxEndpoints + 1],
  );
  if (rows.length > maxEndpoints) return undefined;
  const tenants: string[] = [];
  const types: string[] = [];
  for (const r of rows) {
    for (const type of r.event_types.length === 0 ? [''] : r.event_types) {
      tenants.push(r.tenant_id);
      types.push(type);
    }
  }
  return { tenants, types };
}

export type DeliveryState = 'pending' | 'delivered' | 'failed' | 'disabled';

export interface DeliveryRow {
  id: string; endpointId: string; eventId: string; eventType: string; accountId: string | null; seq: bigint | null;
  payload: unknown; state: DeliveryState; attempts: number; cycleAttempts: number; cycleStartedAt: Date;
  lastDelayMs: number | null; nextAttemptAt: Date | null; lastStatus: number | null; createdAt: Date; deliveredAt: Date | null;
}

interface DeliveryDbRow {
  id: string; endpoint_id: string; event_id: string; event_type: string; account_id: string | null; seq: bigint | null; payload: unknown;
  state: DeliveryState; attempts: number; cycle_attempts: number; cycle_started_at: Date; last_delay_ms: bigint | null;
  next_attempt_at: Date | null; last_status: number | null; created_at: Date; delivered_at: Date | null;
}

const deliveryRow = (r: DeliveryDbRow): DeliveryRow => ({
  id: r.id, endpointId: r.endpoint_id, eventId: r.event_id, eventType: r.event_type, accountId: r.account_id, seq: r.seq, payload: r.payload,
  state: r.state, attempts: r.attempts, cycleAttempts: r.cycle_attempts, cycleStartedAt: r.cycle_started_at,
  lastDelayMs: r.last_delay_ms === null ? null : Number(r.last_delay_ms), nextAttemptAt: r.next_attempt_at, lastStatus: r.last_status,
  createdAt: r.created_at, deliveredAt: r.delivered_at,
});

export interface NewDelivery {
  id: string; endpointId: string; eventId: string; eventType: string;
  /** Both or neither: the account's journal seq orders its deliveries to this endpoint. */
  accountId: string | null; seq: bigint | null;
  /** JSON-safe (money as strings); stored as jsonb and sent as its JSON text on every attempt. */
  payload: unknown;
  now: Date;
}

/**
 * A delivery of one event to one endpoint, due now. Idempotent on (endpoint, event): a second
 * enqueue of the same event returns the delivery made first, unchanged, with `created` false.
 */
export async function enqueueDelivery(pool: Pool, d: NewDelivery): Promise<{ delivery: DeliveryRow; created: boolean }> {
  const inserted = await pool.query<DeliveryDbRow>(
    `INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, account_id, seq, payload, state, cycle_started_at, next_attempt_at, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'pending', $8, $8, $8)
     ON CONFLICT (endpoint_id, event_id) DO NOTHING RETURNING *`,
    [d.id, d.endpointId, d.eventId, d.eventType, d.accountId, d.seq, JSON.stringify(d.payload), d.now],
  );
  if (inserted.rows[0]) return { delivery: deliveryRow(inserted.rows[0]), created: true };
  const { rows } = await pool.query<DeliveryDbRow>('SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2', [d.endpointId, d.eventId]);
  assert.ok(rows[0], 'the conflicting delivery exists');
  return { delivery: deliveryRow(rows[0]), created: false };
}

export async function getDelivery(pool: Pool, tenantId: string, id: string): Promise<DeliveryRow | undefined> {
  const { rows } = await pool.query<DeliveryDbRow>(
    'SELECT d.* FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1 AND e.tenant_id = $2', [id, tenantId],
  );
  return rows[0] ? deliveryRow(rows[0]) : undefined;
}

/** A claimed delivery with what its attempt needs of its endpoint. */
export interface ClaimedDelivery extends DeliveryRow {
  endpoint: Pick<EndpointRow, 'id' | 'tenantId' | 'url' | 'secret' | 'previousSecret' | 'previousSecretExpiresAt'>;
}

/**
 * Takes at most `limit` due deliveries and leases each until `now + leaseMs` (its
 * next_attempt_at), so no other dispatcher takes it while its attempt runs; an attempt that
 * never records (a crash) is retried when the lease lapses. A delivery is held back while an
 * earlier one (by seq, then id) of its account to its endpoint is pending, claimed or not:
 * each account's events reach an endpoint in order, one in flight at a time.
 */
export async function claimDueDeliveries(pool: Pool, c: { now: Date; limit: number; leaseMs: number }): Promise<ClaimedDelivery[]> {
  assertLimit(c.limit);
  assert.ok(Number.isInteger(c.leaseMs) && c.leaseMs > 0, 'leaseMs > 0');
  const { rows } = await pool.query<DeliveryDbRow & Pick<EndpointDbRow, 'tenant_id' | 'url' | 'secret' | 'previous_secret' | 'previous_secret_expires_at'>>(
    `WITH due AS (
       SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
       WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND e.disabled_at IS NULL AND e.deleted_at IS NULL
         AND NOT EXISTS (
           SELECT 1 FROM webhook_deliveries p
           WHERE p.endpoint_id = d.endpoint_id AND p.account_id = d.account_id AND p.state = 'pending' AND (p.seq, p.id) < (d.seq, d.id))
       ORDER BY d.next_attempt_at, d.id LIMIT $2
       FOR UPDATE OF d SKIP LOCKED)
     UPDATE webhook_deliveries d SET next_attempt_at = $1::timestamptz + make_interval(secs => $3::float8 / 1000)
     FROM due, webhook_endpoints e WHERE d.id = due.id AND e.id = d.endpoint_id
     RETURNING d.*, e.tenant_id, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at`,
    [c.now, c.limit, c.leaseMs],
  );
  return rows.map((r) => ({
    ...deliveryRow(r),
    endpoint: { id: r.endpoint_id, tenantId: r.tenant_id, url: r.url, secret: r.secret, previousSecret: r.previous_secret, previousSecretExpiresAt: r.previous_secret_expires_at },
  }));
}

/** What an attempt leaves its delivery in. `disabled` also disables the endpoint (410 Gone). */
export type DeliveryNext =
  | { state: 'pending'; nextAttemptAt: Date; delayMs: number }
  | { state: 'delivered' }
  | { state: 'failed' }
  | { state: 'disabled'; reason: string };

export interface AttemptRecord {
  deliveryId: string;
  /** The delivery's `attempts` when it was claimed: a record made after another dispatcher took it over is refused. */
  claimedAttempts: number;
  at: Date; status: number | null; durationMs: number; error: string | null; responseExcerpt: string | null;
  next: DeliveryNext;
}

// PostgreSQL text cannot hold U+0000, and a receiver's body or an error message might.
const storable = (s: string | null): string | null => (s === null ? null : s.replaceAll('\u0000', ''));

/** The attempt's row and its delivery's new state, in one transaction; `stale` (nothing written) if the claim was lost. */
export async function recordAttempt(pool: Pool, a: AttemptRecord): Promise<'recorded' | 'stale'> {
  const n = a.next;
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ endpoint_id: string; attempts: number }>(
      `UPDATE webhook_deliveries SET attempts = attempts + 1, cycle_attempts = cycle_attempts + 1, last_status = $3, state = $4,
         next_attempt_at = $5, last_delay_ms = COALESCE($6, last_delay_ms), delivered_at = $7
       WHERE id = $1 AND attempts = $2 AND state = 'pending' RETURNING endpoint_id, attempts`,
      [a.deliveryId, a.claimedAttempts, a.status, n.state, n.state === 'pending' ? n.nextAttemptAt : null,
        n.state === 'pending' ? Math.round(n.delayMs) : null, n.state === 'delivered' ? a.at : null],
    );
    const updated = rows[0];
    if (!updated) {
      await client.query('ROLLBACK');
      return 'stale';
    }
    await client.query(
      `INSERT INTO webhook_attempts (delivery_id, endpoint_id, attempt, at, status, duration_ms, error, response_excerpt)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [a.deliveryId, updated.endpoint_id, updated.attempts, a.at, a.status, Math.max(0, Math.round(a.durationMs)), storable(a.error), storable(a.responseExcerpt)],
    );
    if (n.state === 'disabled') {
      await client.query('UPDATE webhook_endpoints SET disabled_at = $2, disabled_reason = $3 WHERE id = $1 AND disabled_at IS NULL', [updated.endpoint_id, a.at, n.reason]);
      await client.query("UPDATE webhook_deliveries SET state = 'disabled', next_attempt_at = NULL WHERE endpoint_id = $1 AND state = 'pending'", [updated.endpoint_id]);
    }
    await client.query('COMMIT');
    return 'recorded';
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

export interface AttemptRow {
  /** The page cursor. */
  id: string;
  deliveryId: string; eventType: string; attempt: number; at: Date; status: number | null; durationMs: number;
  error: string | null; responseExcerpt: string | null;
}

/**
 * Attempts of all the endpoint's deliveries, newest first. The cursor is the last id seen, as
 * digits; anything else (a client's junk) reads as no cursor at all rather than failing the query.
 */
export async function listEndpointAttempts(pool: Pool, tenantId: string, endpointId: string, page: { limit: number; beforeId?: string }): Promise<{ data: AttemptRow[]; nextCursor: string | null }> {
  assertLimit(page.limit);
  const beforeId = page.beforeId !== undefined && /^[1-9][0-9]{0,17}$/.test(page.beforeId) ? page.beforeId : null;
  const { rows } = await pool.query<{ id: bigint; delivery_id: string; event_type: string; attempt: number; at: Date; status: number | null; duration_ms: number; error: string | null; response_excerpt: string | null }>(
    `SELECT a.id, a.delivery_id, d.event_type, a.attempt, a.at, a.status, a.duration_ms, a.error, a.response_excerpt
     FROM webhook_attempts a JOIN webhook_endpoints e ON e.id = a.endpoint_id JOIN webhook_deliveries d ON d.id = a.delivery_id
     WHERE a.endpoint_id = $1 AND e.tenant_id = $2 AND ($3::bigint IS NULL OR a.id < $3) ORDER BY a.id DESC LIMIT $4`,
    [endpointId, tenantId, beforeId, page.limit + 1],
  );
  const data = rows.slice(0, page.limit).map((r) => ({
    id: String(r.id), deliveryId: r.delivery_id, eventType: r.event_type, attempt: r.attempt, at: r.at, status: r.status,
    durationMs: r.duration_ms, error: r.error, responseExcerpt: r.response_excerpt,
  }));
  return { data, nextCursor: rows.length > page.limit ? data[data.length - 1]!.id : null };
}

export type RedeliverResult = 'redelivering' | 'not_found' | 'already_pending' | 'endpoint_disabled';

/**
 * A delivered, failed or disabled delivery goes out again, same webhook-id, due `now`, with a
 * fresh cycle (backoff and horizon start over). A pending one is left alone: it may be in
 * flight, and moving its due time would let a second dispatcher send it concurrently.
 */
export async function redeliver(pool: Pool, tenantId: string, id: string, now: Date): Promise<RedeliverResult> {
  const { rows } = await pool.query<{ outcome: RedeliverResult }>(
    `WITH target AS (
       SELECT d.id, d.state, (e.disabled_at IS NOT NULL) AS disabled FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
       WHERE d.id = $1 AND e.tenant_id = $2 AND e.deleted_at IS NULL FOR UPDATE OF d),
     moved AS (
       UPDATE webhook_deliveries d SET state = 'pending', next_attempt_at = $3, cycle_started_at = $3, cycle_attempts = 0, last_delay_ms = NULL, delivered_at = NULL
       FROM target t WHERE d.id = t.id AND t.state <> 'pending' AND NOT t.disabled RETURNING d.id)
     SELECT CASE WHEN EXISTS (SELECT 1 FROM moved) THEN 'redelivering' WHEN t.disabled THEN 'endpoint_disabled' ELSE 'already_pending' END AS outcome
     FROM target t`,
    [id, tenantId, now],
  );
  return rows[0]?.outcome ?? 'not_found';
}

/** Deliveries waiting for a 2xx (due now or retrying later), from the partial index of pending ones. */
export async function pendingDeliveries(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ n: bigint }>("SELECT count(*) AS n FROM webhook_deliveries WHERE state = 'pending'");
  return Number(rows[0]!.n);
}

/** The webhook functions bound to one pool, for the composition root to hand to the dispatcher and the routes. */
export function webhookRepositories(pool: Pool) {
  return {
    endpoints: {
      create: (e: NewEndpoint) => createEndpoint(pool, e),
      get: (tenantId: string, id: string) => getEndpoint(pool, tenantId, id),
      list: (tenantId: string, page: { limit: number; afterId?: string }) => listEndpoints(pool, tenantId, page),
      delete: (tenantId: string, id: string, now: Date) => deleteEndpoint(pool, tenantId, id, now),
      enable: (tenantId: string, id: string) => enableEndpoint(pool, tenantId, id),
      disable: (tenantId: string, id: string, reason: string, now: Date) => disableEndpoint(pool, tenantId, id, reason, now),
      rotateSecret: (r: { tenantId: string; id: string; newSecret: string; now: Date; overlapMs: number }) => rotateEndpointSecret(pool, r),
      matching: (tenantId: string, eventType: string) => matchingEndpoints(pool, tenantId, eventType),
      interest: (maxEndpoints: number) => endpointInterest(pool, maxEndpoints),
      attempts: (tenantId: string, endpointId: string, page: { limit: number; beforeId?: string }) => listEndpointAttempts(pool, tenantId, endpointId, page),
    },
    deliveries: {
      enqueue: (d: NewDelivery) => enqueueDelivery(pool, d),
      get: (tenantId: string, id: string) => getDelivery(pool, tenantId, id),
      claimDue: (c: { now: Date; limit: number; leaseMs: number }) => claimDueDeliveries(pool, c),
      record: (a: AttemptRecord) => recordAttempt(pool, a),
      redeliver: (tenantId: string, id: string, now: Date) => redeliver(pool, tenantId, id, now),
      pending: () => pendingDeliveries(pool),
    },
  };
}

export type WebhookStore = ReturnType<typeof webhookRepositories>;
