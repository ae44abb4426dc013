// Read queries and the small admin writes: tenants, API keys (stored as SHA-256 hashes),
// the account directory, transfers, statements, idempotency records and their cleanup.
import { createHash } from 'node:crypto';
import type { Client, Pool } from './db.ts';
import type { HoldView, TransferView } from '../domain/views.ts';
import { createEndpoint, rotateEndpointSecret } from './webhooks.ts';
import type { EndpointRow, NewEndpoint } from './webhooks.ts';

export const hashKey = (key: string): string => createHash('sha256').update(key).digest('hex');

export interface Principal { keyId: string; role: 'admin' | 'tenant'; tenantId: string | null }

export async function findPrincipal(pool: Pool, key: string): Promise<Principal | undefined> {
  const { rows } = await pool.query<{ id: string; role: 'admin' | 'tenant'; tenant_id: string | null }>(
    'SELECT id, role, tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL', [hashKey(key)],
  );
  const r = rows[0];
  return r ? { keyId: r.id, role: r.role, tenantId: r.tenant_id } : undefined;
}

export async function countAdminKeys(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ n: bigint }>("SELECT count(*) AS n FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL");
  return Number(rows[0]!.n);
}

export async function insertKey(pool: Pool, k: { id: string; role: 'admin' | 'tenant'; tenantId: string | null; key: string }): Promise<void> {
  await pool.query('INSERT INTO api_keys (id, tenant_id, role, key_hash) VALUES ($1, $2, $3, $4) ON CONFLICT (key_hash) DO NOTHING', [k.id, k.tenantId, k.role, hashKey(k.key)]);
}

export interface TenantRow { id: string; name: string; createdAt: string }

export async function getTenant(pool: Pool, id: string): Promise<TenantRow | undefined> {
  const { rows } = await pool.query<{ id: string; name: string; created_at: Date }>('SELECT id, name, created_at FROM tenants WHERE id = $1', [id]);
  const r = rows[0];
  return r ? { id: r.id, name: r.name, createdAt: r.created_at.toISOString() } : undefined;
}

export async function listTenants(pool: Pool, limit: number): Promise<TenantRow[]> {
  const { rows } = await pool.query<{ id: string; name: string; created_at: Date }>('SELECT id, name, created_at FROM tenants ORDER BY id LIMIT $1', [limit]);
  return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at.toISOString() }));
}

export interface DirectoryEntry { id: string; tenantId: string | null; currency: string; kind: 'customer' | 'external' | 'suspense'; region: string }

export async function findAccount(pool: Pool, id: string): Promise<DirectoryEntry | undefined> {
  const { rows } = await pool.query<{ id: string; tenant_id: string | null; currency: string; kind: DirectoryEntry['kind']; region: string }>(
    'SELECT id, tenant_id, currency, kind, region FROM accounts WHERE id = $1', [id],
  );
  const r = rows[0];
  return r ? { id: r.id, tenantId: r.tenant_id, currency: r.currency, kind: r.kind, region: r.region } : undefined;
}

interface TransferDbRow {
  id: string; tenant_id: string | null; kind: string; source_id: string; destination_id: string; amount: bigint; currency: string;
  state: string; refusal_code: string | null; metadata: Record<string, unknown> | null; created_at: Date; updated_at: Date;
  hold_id: string | null; refund_of: string | null; refunded: bigint;
}

export function transferRowView(r: TransferDbRow): TransferView {
  return {
    id: r.id, kind: r.kind, sourceAccountId: r.source_id, destinationAccountId: r.destination_id, amount: r.amount.toString(),
    currency: r.currency, state: r.state, refusalCode: r.refusal_code, metadata: r.metadata,
    holdId: r.hold_id, refundOf: r.refund_of, refunded: r.refunded.toString(),
    createdAt: r.created_at.toISOString(), updatedAt: r.updated_at.toISOString(),
  };
}

export async function getTransfer(pool: Pool, id: string): Promise<(TransferView & { tenantId: string | null }) | undefined> {
  const { rows } = await pool.query<TransferDbRow>('SELECT * FROM transfers WHERE id = $1', [id]);
  const r = rows[0];
  return r ? { ...transferRowView(r), tenantId: r.tenant_id } : undefined;
}

/** `refundOf`: a refund's original, whose claim a return gives back. */
export interface InFlightTransfer { id: string; state: 'debited' | 'refused'; sourceId: string; destinationId: string; amount: bigint; currency: string; refundOf: string | null }

/**
 * What one claim of the relay or the sweeper takes: rows of these shards (the source account's
 * shard), none of `exclude`, at most `limit`. Each row taken waits before it can be taken again:
 * `backoffMs`, doubled per attempt after the first FLAT_ATTEMPTS, at most `maxBackoffMs`, unless `ignoreBackoff`.
 */
export interface WorkClaim { shards: string[]; exclude: string[]; limit: number; backoffMs: number; maxBackoffMs: number; ignoreBackoff: boolean }

/**
 * Attempts retried at the base wait before the wait starts doubling: a destination that is
 * only moving between owners (a failover takes about a lease TTL) is retried at the relay's
 * own pace, and only a row that keeps failing (its region down) backs off further.
 */
const FLAT_ATTEMPTS = 10;

/** The wait before a row taken `attempts` times before may be taken again, as an SQL interval. */
const backoff = (attempts: string, base: string, max: string): string =>
  `make_interval(secs => LEAST(${max}::float8, ${base}::float8 * power(2, GREATEST(0, LEAST(${attempts}, 40) - ${FLAT_ATTEMPTS}))) / 1000)`;

/**
 * The relay's next work: transfers in flight for `minAgeMs` or more, due first, each pushed back
 * by its backoff as it is taken, so a row that cannot move goes behind the others (a row that
 * moves leaves the list). Every time here is the database's: `state_since`, `now()`.
 */
export async function claimInFlightTransfers(pool: Pool, minAgeMs: number, c: WorkClaim): Promise<InFlightTransfer[]> {
  const { rows } = await pool.query<TransferDbRow>(
    `WITH due AS (
       SELECT t.id FROM transfers t JOIN accounts a ON a.id = t.source_id
       WHERE t.state IN ('debited', 'refused') AND a.shard = ANY($1::text[]) AND t.id <> ALL($2::text[])
         AND t.state_since <= now() - make_interval(secs => $3::float8 / 1000)
         AND ($4::boolean OR t.next_attempt_at IS NULL OR t.next_attempt_at <= now())
       ORDER BY COALESCE(t.next_attempt_at, t.state_since), t.id LIMIT $5
       FOR UPDATE OF t SKIP LOCKED)
     UPDATE transfers t SET relay_attempts = t.relay_attempts + 1, next_attempt_at = now() + ${backoff('t.relay_attempts', '$6', '$7')}
     FROM due WHERE t.id = due.id
     RETURNING t.*`, [c.shards, c.exclude, minAgeMs, c.ignoreBackoff, c.limit, c.backoffMs, c.maxBackoffMs],
  );
  return rows.map((r) => ({ id: r.id, state: r.state as 'debited' | 'refused', sourceId: r.source_id, destinationId: r.destination_id, amount: r.amount, currency: r.currency, refundOf: r.refund_of }));
}

interface HoldDbRow {
  id: string; tenant_id: string | null; source_id: string; destination_id: string; amount: bigint; captured: bigint; currency: string;
  multi_capture: boolean; state: string; expires_at: Date; metadata: Record<string, unknown> | null; created_at: Date; updated_at: Date;
  group_id: string | null;
}

/** A hold with its tenant and its linked batch group (null for a hold a client placed). */
export async function getHold(pool: Pool, id: string): Promise<(HoldView & { tenantId: string | null; groupId: string | null }) | undefined> {
  const { rows } = await pool.query<HoldDbRow>('SELECT * FROM holds WHERE id = $1', [id]);
  const r = rows[0];
  if (!r) return undefined;
  return {
    tenantId: r.tenant_id, groupId: r.group_id, id: r.id, sourceAccountId: r.source_id, destinationAccountId: r.destination_id, amount: r.amount.toString(),
    captured: r.captured.toString(), remaining: (r.state === 'held' ? r.amount - r.captured : 0n).toString(), currency: r.currency,
    multiCapture: r.multi_capture, state: r.state, expiresAt: r.expires_at.toISOString(), metadata: r.metadata,
    createdAt: r.created_at.toISOString(), updatedAt: r.updated_at.toISOString(),
  };
}

export interface PostingView { seq: number; kind: string; amount: string; balanceAfter: string; transferId: string | null; holdId: string | null; heldAfter: string; createdAt: string }

/** Postings newest first; the cursor is the last seq seen. */
export async function statement(pool: Pool, accountId: string, limit: number, beforeSeq: number | undefined): Promise<{ data: PostingView[]; nextCursor: string | null }> {
  const { rows } = await pool.query<{ seq: bigint; kind: string; amount: bigint; balance_after: bigint; transfer_id: string | null; hold_id: string | null; held_after: bigint; created_at: Date }>(
    `SELECT seq, kind, amount, balance_after, transfer_id, hold_id, held_after, created_at FROM journal
     WHERE account_id = $1 AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3`,
    [accountId, beforeSeq ?? null, limit + 1],
  );
  const page = rows.slice(0, limit);
  return {
    data: page.map((r) => ({ seq: Number(r.seq), kind: r.kind, amount: r.amount.toString(), balanceAfter: r.balance_after.toString(), transferId: r.transfer_id, holdId: r.hold_id, heldAfter: r.held_after.toString(), createdAt: r.created_at.toISOString() })),
    nextCursor: rows.length > limit ? String(page[page.length - 1]!.seq) : null,
  };
}

/**
 * Deletes the keys past their retention, except those whose transfer is still in flight: a
 * replay of it must still get its first answer. They go once the transfer is terminal.
 */
export async function deleteExpiredKeys(pool: Pool, retentionMs: number): Promise<number> {
  const res = await pool.query(
    `DELETE FROM idempotency_keys k WHERE k.created_at < now() - make_interval(secs => $1::float8 / 1000)
       AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.id = k.resource_id AND t.state IN ('debited', 'refused'))`, [retentionMs]);
  return res.rowCount ?? 0;
}

/** Records a linked group's decision unless one exists, and answers the one that stands. */
export async function decideGroup(pool: Pool, groupId: string, want: 'commit' | 'abort'): Promise<'commit' | 'abort'> {
  // A rival insert that commits while this statement runs is invisible to its snapshot:
  // the statement then finds nothing, and the next attempt reads the rival's decision.
  for (let attempt = 0; attempt < 3; attempt++) {
    const { rows } = await pool.query<{ decision: 'commit' | 'abort' }>(
      `WITH ins AS (INSERT INTO linked_groups (id, decision) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING decision)
       SELECT decision FROM ins UNION ALL SELECT decision FROM linked_groups WHERE id = $1 LIMIT 1`, [groupId, want]);
    const d = rows[0]?.decision;
    if (d) return d;
  }
  throw new Error(`linked group ${groupId} has no decision`);
}

/** The capture transfer of a hold, if it was captured. */
export async function captureOfHold(pool: Pool, holdId: string): Promise<(TransferView & { tenantId: string | null }) | undefined> {
  const { rows } = await pool.query<TransferDbRow>("SELECT * FROM transfers WHERE hold_id = $1 AND kind = 'capture' ORDER BY created_at LIMIT 1", [holdId]);
  const r = rows[0];
  return r ? { ...transferRowView(r), tenantId: r.tenant_id } : undefined;
}

/** The source and amount of a transfer, for giving refused money back (and a refund's original, for its claim). */
/** Transfers in flight (debited or refused) and the oldest one's age by the database clock; the partial index transfers_in_flight answers it. */
export async function inFlightSummary(pool: Pool): Promise<{ count: number; oldestAgeS: number }> {
  const { rows } = await pool.query<{ n: bigint; age: number | null }>({
    name: 'in_flight_summary',
    text: `SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(updated_at))::float8 AS age FROM transfers WHERE state IN ('debited', 'refused')`,
  });
  const r = rows[0]!;
  return { count: Number(r.n), oldestAgeS: Math.max(0, r.age ?? 0) };
}

export async function transferSource(pool: Pool, id: string): Promise<{ sourceId: string; amount: bigint; refundOf: string | null } | undefined> {
  const { rows } = await pool.query<{ source_id: string; amount: bigint; refund_of: string | null }>('SELECT source_id, amount, refund_of FROM transfers WHERE id = $1', [id]);
  const r = rows[0];
  return r ? { sourceId: r.source_id, amount: r.amount, refundOf: r.refund_of } : undefined;
}

/** `asOf`: the time the hold was found due at, the time its release or capture carries. */
export interface DueHold { id: string; sourceId: string; destinationId: string; tenantId: string | null; groupId: string | null; asOf: string }

/**
 * The expiry sweeper's next work: holds still held at their deadline, soonest due first, each
 * pushed back by its backoff as it is taken (like the relay's). Due by the database's clock, so
 * no node's clock releases a hold before its `expiresAt`; `asOfIso` is a test's virtual clock
 * only (null in production).
 */
export async function claimDueHolds(pool: Pool, asOfIso: string | null, c: WorkClaim): Promise<DueHold[]> {
  const { rows } = await pool.query<{ id: string; source_id: string; destination_id: string; tenant_id: string | null; group_id: string | null; as_of: Date }>(
    `WITH due AS (
       SELECT h.id FROM holds h JOIN accounts a ON a.id = h.source_id
       WHERE h.state = 'held' AND h.expires_at <= COALESCE($1::timestamptz, now()) AND a.shard = ANY($2::text[]) AND h.id <> ALL($3::text[])
         AND ($4::boolean OR h.next_attempt_at IS NULL OR h.next_attempt_at <= now())
       ORDER BY COALESCE(h.next_attempt_at, h.expires_at), h.id LIMIT $5
       FOR UPDATE OF h SKIP LOCKED)
     UPDATE holds h SET sweep_attempts = h.sweep_attempts + 1, next_attempt_at = now() + ${backoff('h.sweep_attempts', '$6', '$7')}
     FROM due WHERE h.id = due.id
     RETURNING h.id, h.source_id, h.destination_id, h.tenant_id, h.group_id, COALESCE($1::timestamptz, now()) AS as_of`,
    [asOfIso, c.shards, c.exclude, c.ignoreBackoff, c.limit, c.backoffMs, c.maxBackoffMs]);
  return rows.map((h) => ({ id: h.id, sourceId: h.source_id, destinationId: h.destination_id, tenantId: h.tenant_id, groupId: h.group_id, asOf: h.as_of.toISOString() }));
}

/** Claims a batch's own Idempotency-Key; answers the request hash that holds the key now, and whether this call claimed it. */
export async function claimBatchKey(pool: Pool, tenantId: string, key: string, requestHash: string): Promise<{ requestHash: string; fresh: boolean } | undefined> {
  const { rows } = await pool.query<{ request_hash: string; fresh: boolean }>(
    `WITH ins AS (INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING request_hash)
     SELECT request_hash, true AS fresh FROM ins
     UNION ALL SELECT request_hash, false AS fresh FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 LIMIT 1`,
    [tenantId, key, requestHash]);
  const r = rows[0];
  return r ? { requestHash: r.request_hash, fresh: r.fresh } : undefined;
}

/** What a keyed create found: it ran now, or the key had run before (with its stored answer, if finished). */
export type KeyedCreate<T> =
  | { type: 'created'; value: T }
  | { type: 'stored'; requestHash: string; statusCode: number | null; response: unknown };

/**
 * A create and its idempotency record in one transaction: the key is claimed first, so a
 * duplicate finds it and reads the stored answer instead of creating a second time.
 */
async function createOnce<T>(
  pool: Pool, scope: string, key: string, requestHash: string,
  create: (c: Client) => Promise<{ value: T; statusCode: number; stored: unknown; resourceId: string }>,
): Promise<KeyedCreate<T>> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    const claim = await c.query('INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [scope, key, requestHash]);
    if (claim.rowCount === 0) {
      await c.query('ROLLBACK');
      const { rows } = await c.query<{ request_hash: string; status_code: number | null; response: unknown }>(
        'SELECT request_hash, status_code, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2', [scope, key]);
      const r = rows[0];
      // Deleted by retention between the two statements: as good as another request's key.
      if (!r) return { type: 'stored', requestHash: '', statusCode: null, response: null };
      return { type: 'stored', requestHash: r.request_hash, statusCode: r.status_code, response: r.response };
    }
    const out = await create(c);
    await c.query('UPDATE idempotency_keys SET status_code = $3, response = $4, resource_id = $5 WHERE tenant_id = $1 AND key = $2',
      [scope, key, out.statusCode, JSON.stringify(out.stored), out.resourceId]);
    await c.query('COMMIT');
    return { type: 'created', value: out.value };
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
}

/** Creates a tenant under an admin Idempotency-Key; `statusCode` is what a replay answers. */
export function createTenantOnce(pool: Pool, k: { scope: string; key: string; requestHash: string; statusCode: number }, t: { id: string; name: string }): Promise<KeyedCreate<TenantRow>> {
  return createOnce(pool, k.scope, k.key, k.requestHash, async (c) => {
    const { rows } = await c.query<{ created_at: Date }>('INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING created_at', [t.id, t.name]);
    const row = { id: t.id, name: t.name, createdAt: rows[0]!.created_at.toISOString() };
    return { value: row, statusCode: k.statusCode, stored: row, resourceId: t.id };
  });
}

/** Creates a tenant's API key under an admin Idempotency-Key. The stored answer never holds the secret. */
export function createKeyOnce(pool: Pool, k: { scope: string; key: string; requestHash: string; statusCode: number }, a: { id: string; tenantId: string; secret: string }): Promise<KeyedCreate<{ id: string; tenantId: string }>> {
  return createOnce(pool, k.scope, k.key, k.requestHash, async (c) => {
    await c.query("INSERT INTO api_keys (id, tenant_id, role, key_hash) VALUES ($1, $2, 'tenant', $3)", [a.id, a.tenantId, hashKey(a.secret)]);
    return { value: { id: a.id, tenantId: a.tenantId }, statusCode: k.statusCode, stored: { id: a.id, tenantId: a.tenantId }, resourceId: a.id };
  });
}

/** A webhook endpoint created under the tenant's Idempotency-Key. The stored answer never holds the secret. */
export function createWebhookEndpointOnce(pool: Pool, k: { scope: string; key: string; requestHash: string; statusCode: number }, e: NewEndpoint, stored: (row: EndpointRow) => unknown): Promise<KeyedCreate<EndpointRow>> {
  return createOnce(pool, k.scope, k.key, k.requestHash, async (c) => {
    const row = await createEndpoint(c, e);
    return { value: row, statusCode: k.statusCode, stored: stored(row), resourceId: row.id };
  });
}

/** A webhook endpoint's secret rotated under the tenant's Idempotency-Key; undefined: no such endpoint (nothing stored). */
export async function rotateWebhookSecretOnce(
  pool: Pool, k: { scope: string; key: string; requestHash: string; statusCode: number },
  r: { tenantId: string; id: string; newSecret: string; now: Date; overlapMs: number }, stored: (row: EndpointRow) => unknown,
): Promise<KeyedCreate<EndpointRow> | undefined> {
  try {
    return await createOnce(pool, k.scope, k.key, k.requestHash, async (c) => {
      const row = await rotateEndpointSecret(c, r);
      if (!row) throw new NoSuchEndpoint();
      return { value: row, statusCode: k.statusCode, stored: stored(row), resourceId: row.id };
    });
  } catch (err) {
    if (err instanceof NoSuchEndpoint) return undefined;
    throw err;
  }
}

class NoSuchEndpoint extends Error {}

/**
 * Revokes a tenant's key; a second revoke answers the first one's time. Undefined when the
 * tenant has no such key (the caller tells a missing tenant apart).
 */
export async function revokeKey(pool: Pool, tenantId: string, keyId: string): Promise<{ id: string; revokedAt: string } | undefined> {
  const { rows } = await pool.query<{ id: string; revoked_at: Date }>(
    'UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND tenant_id = $2 RETURNING id, revoked_at', [keyId, tenantId]);
  const r = rows[0];
  return r ? { id: r.id, revokedAt: r.revoked_at.toISOString() } : undefined;
}

export interface ShardRow { id: string; region: string; bucket: number; epoch: bigint; owner: string | null; updatedAt: string }

export async function listShards(pool: Pool): Promise<ShardRow[]> {
  const { rows } = await pool.query<{ id: string; region: string; bucket: number; epoch: bigint; owner: string | null; updated_at: Date }>(
    'SELECT id, region, bucket, epoch, owner, updated_at FROM shards ORDER BY region, bucket');
  return rows.map((r) => ({ id: r.id, region: r.region, bucket: r.bucket, epoch: r.epoch, owner: r.owner, updatedAt: r.updated_at.toISOString() }));
}

export async function getShard(pool: Pool, id: string): Promise<{ owner: string | null; epoch: bigint } | undefined> {
  const { rows } = await pool.query<{ owner: string | null; epoch: bigint }>('SELECT owner, epoch FROM shards WHERE id = $1', [id]);
  return rows[0];
}

/** Where an account's journal and snapshot stand, for the inspection endpoint. */
export async function journalPosition(pool: Pool, accountId: string): Promise<{ journalSeq: number; snapshotSeq: number; snapshotAt: string | null }> {
  const { rows } = await pool.query<{ journal_seq: bigint | null; snapshot_seq: bigint | null; snapshot_at: Date | null }>(
    `SELECT (SELECT max(seq) FROM journal WHERE account_id = $1) AS journal_seq,
            s.seq AS snapshot_seq, s.created_at AS snapshot_at
     FROM (SELECT 1) one LEFT JOIN snapshots s ON s.account_id = $1`, [accountId]);
  const r = rows[0]!;
  return { journalSeq: r.journal_seq === null ? 0 : Number(r.journal_seq), snapshotSeq: r.snapshot_seq === null ? 0 : Number(r.snapshot_seq), snapshotAt: r.snapshot_at?.toISOString() ?? null };
}

/** The database answers: readiness. */
export async function ping(pool: Pool): Promise<void> {
  await pool.query('SELECT 1');
}
