// Per-tenant rate-limit overrides (migration 004): requests per second, NULL meaning the
// node's default. Read on the rate limiter's path through a short cache (src/http/rate-limit.ts).
import type { Pool } from './db.ts';

export interface TenantLimits { readsPerS: number | null; writesPerS: number | null }

/** The tenant's overrides, or undefined when there is no such tenant. */
export async function getTenantLimits(pool: Pool, tenantId: string): Promise<TenantLimits | undefined> {
  const { rows } = await pool.query<{ reads_per_s: number | null; writes_per_s: number | null }>(
    'SELECT reads_per_s, writes_per_s FROM tenants WHERE id = $1', [tenantId],
  );
  const r = rows[0];
  return r ? { readsPerS: r.reads_per_s, writesPerS: r.writes_per_s } : undefined;
}

/** Replaces both overrides; false when there is no such tenant. */
export async function setTenantLimits(pool: Pool, tenantId: string, limits: TenantLimits): Promise<boolean> {
  const { rowCount } = await pool.query('UPDATE tenants SET reads_per_s = $2, writes_per_s = $3 WHERE id = $1', [tenantId, limits.readsPerS, limits.writesPerS]);
  return rowCount === 1;
}
