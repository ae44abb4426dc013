// Read queries and the small admin writes: tenants, API keys (stored as SHA-256 hashes),
// the account directory, transfers, statements, idempotency records and their cleanup.
import { createHash } from 'node:crypto';
import type { Pool } from './db.ts';
import type { HoldView, TransferView } from '../domain/views.ts';

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

export async function insertTenant(pool: Pool, id: string, name: string): Promise<TenantRow> {
  const { rows } = await pool.query<{ created_at: Date }>('INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING created_at', [id, name]);
  return { id, name, createdAt: rows[0]!.created_at.toISOString() };
}

export async function getTenant(pool: Pool, id: string): Promise<TenantRow | undefined> {
  const { rows } = await pool.query<{ id: string; name: string; created_at: Date }>('SELECT id, name, created_at FROM tenants WHERE id = $1', [id]);
  const r = rows[0];
  return r ? { id: r.id, name: r.name, createdAt: r.created_at.toISOString() } : undefined;
}

export async function listTenants(pool: Pool, limit: number): Promise<TenantRow[]> {
  const { rows } = await pool.query<{ id: string; name: string; created_at: Date }>('SELECT id, name, created_at FROM tenants ORDER BY id LIMIT $1', [limit]);
  return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at.toISOString() }));
}

export interface DirectoryEntry { id: string; tenantId: string | null; currency: string; kind: 'customer' | 'external'; region: string }

export async function findAccount(pool: Pool, id: string): Promise<DirectoryEntry | undefined> {
  const { rows } = await pool.query<{ id: string; tenant_id: string | null; currency: string; kind: 'customer' | 'external'; region: string }>(
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

export interface InFlightTransfer { id: string; state: 'debited' | 'refused'; sourceId: string; destinationId: string; amount: bigint; currency: string }

/** Transfers still in flight and older than `minAgeMs`: the relay's work list. */
export async function inFlightTransfers(pool: Pool, minAgeMs: number, limit: number): Promise<InFlightTransfer[]> {
  const { rows } = await pool.query<TransferDbRow>(
    `SELECT * FROM transfers WHERE state IN ('debited', 'refused') AND updated_at < now() - make_interval(secs => $1::float8 / 1000)
     ORDER BY updated_at LIMIT $2`, [minAgeMs, limit],
  );
  return rows.map((r) => ({ id: r.id, state: r.state as 'debited' | 'refused', sourceId: r.source_id, destinationId: r.destination_id, amount: r.amount, currency: r.currency }));
}

interface HoldDbRow {
  id: string; tenant_id: string | null; source_id: string; destination_id: string; amount: bigint; captured: bigint; currency: string;
  multi_capture: boolean; state: string; expires_at: Date; metadata: Record<string, unknown> | null; created_at: Date; updated_at: Date;
}

export async function getHold(pool: Pool, id: string): Promise<(HoldView & { tenantId: string | null }) | undefined> {
  const { rows } = await pool.query<HoldDbRow>('SELECT * FROM holds WHERE id = $1', [id]);
  const r = rows[0];
  if (!r) return undefined;
  return {
    tenantId: r.tenant_id, id: r.id, sourceAccountId: r.source_id, destinationAccountId: r.destination_id, amount: r.amount.toString(),
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

export async function getIdempotencyRecord(pool: Pool, tenantId: string, key: string): Promise<{ requestHash: string; resourceId: string | null; statusCode: number | null; response: unknown } | undefined> {
  const { rows } = await pool.query<{ request_hash: string; resource_id: string | null; status_code: number | null; response: unknown }>(
    'SELECT request_hash, resource_id, status_code, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2', [tenantId, key],
  );
  const r = rows[0];
  return r ? { requestHash: r.request_hash, resourceId: r.resource_id, statusCode: r.status_code, response: r.response } : undefined;
}

export async function storeIdempotentResponse(pool: Pool, tenantId: string, key: string, requestHash: string, resourceId: string | null, statusCode: number, response: unknown): Promise<void> {
  await pool.query(
    `INSERT INTO idempotency_keys (tenant_id, key, request_hash, resource_id, status_code, response) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT DO NOTHING`, [tenantId, key, requestHash, resourceId, statusCode, JSON.stringify(response)],
  );
}

export async function deleteExpiredKeys(pool: Pool, retentionMs: number): Promise<number> {
  const res = await pool.query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1::float8 / 1000)", [retentionMs]);
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
