// Suspense accounts (migration 007): money returned to accounts closed while it was on its
// way, one account per tenant, region and currency. The admin's list reads each balance from
// the account's last posting, which is its committed balance.
import type { Pool } from './db.ts';

export interface SuspenseRow { accountId: string; tenantId: string | null; region: string; currency: string; balance: bigint; updatedAt: string }

/** Suspense accounts in id order, at most `limit`, each with its committed balance. */
export async function listSuspense(pool: Pool, limit: number): Promise<SuspenseRow[]> {
  const { rows } = await pool.query<{ id: string; tenant_id: string | null; region: string; currency: string; balance: bigint | null; at: Date | null }>(
    `SELECT a.id, a.tenant_id, a.region, a.currency, last.balance_after AS balance, last.created_at AS at
     FROM accounts a
     LEFT JOIN LATERAL (SELECT balance_after, created_at FROM journal j WHERE j.account_id = a.id ORDER BY seq DESC LIMIT 1) last ON true
     WHERE a.kind = 'suspense' ORDER BY a.id LIMIT $1`, [limit]);
  return rows.map((r) => ({
    accountId: r.id, tenantId: r.tenant_id, region: r.region, currency: r.currency.trim(), balance: r.balance ?? 0n, updatedAt: (r.at ?? new Date(0)).toISOString(),
  }));
}
