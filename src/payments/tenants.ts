// Tenants, their API keys (shown once, stored as SHA-256 hashes), the admin key, the
// principal behind a bearer key, and per-tenant rate-limit overrides: the control plane. What a
// node reads of it is cached within a staleness bound and outlives a control-database outage
// for a grace time (src/payments/control-cache.ts).
import type { Metrics } from '../observability/metrics.ts';
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { makeTenantId, parseTenantId, uuidv7Hex } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { Principal, Repositories, TenantLimits, TenantRow } from '../persistence/repositories.ts';
import type { Outcome } from './outcome.ts';
import { STORED_CREATED, keyedOutcome } from './outcome.ts';
import type { InFlightKeys } from './in-flight-keys.ts';
import { ControlCache, ControlPlaneHealth } from './control-cache.ts';

/** Admin writes share one idempotency scope, apart from every tenant's. */
const ADMIN_SCOPE = 'admin';
const MAX_CACHED_PRINCIPALS = 10_000;
const MAX_CACHED_TENANTS = 10_000;

/** CONTROL_CACHE_MS and CONTROL_OUTAGE_GRACE_MS (config/settings.ts). */
export interface ControlCacheSettings { cacheMs: number; outageGraceMs: number }

export function newApiKey(role: 'admin' | 'tenant'): string {
  return `gp_${role}_${randomBytes(24).toString('base64url')}`;
}

const newKeyId = (): string => `key_${uuidv7Hex(Date.now(), randomBytes(10))}`;


export class Tenants {
  /** Keyed by the key's hash: only hashes are kept. */
  private readonly principals: ControlCache<Principal | undefined>;
  private readonly overrides: ControlCache<TenantLimits | undefined>;
  private readonly health: ControlPlaneHealth;

  constructor(
    private readonly repos: Pick<Repositories, 'tenants' | 'apiKeys'>, private readonly keys: InFlightKeys, private readonly logger: Logger,
    cache: ControlCacheSettings, clock: () => number = Date.now,
    metrics?: Pick<Metrics, 'controlPlaneStale'>,
  ) {
    // One view of the control database's health for both: a failed key read spares the limits a wait, and back.
    const health = (this.health = new ControlPlaneHealth(logger));
    const onStale = () => metrics?.controlPlaneStale.inc();
    this.principals = new ControlCache({ ...cache, maxEntries: MAX_CACHED_PRINCIPALS, clock }, health, onStale);
    this.overrides = new ControlCache({ ...cache, maxEntries: MAX_CACHED_TENANTS, clock }, health, onStale);
  }

  /** Whether the control database answered its last read. */
  controlPlaneReachable(): boolean {
    return this.health.reachable;
  }

  /**
   * The principal of a bearer key, or undefined; cached to keep the lookup off the hot path. A key
   * that cannot be checked (the control database down, the key not read before) throws
   * control_plane_unavailable: it is neither accepted nor called invalid.
   */
  async principal(key: string, now: number): Promise<Principal | undefined> {
    return this.principals.get(createHash('sha256').update(key).digest('hex'), now, () => this.repos.apiKeys.principal(key));
  }

  /** Revokes a tenant's key: this node stops accepting it at once, the others within CONTROL_CACHE_MS. */
  async revokeKey(rawTenantId: string, keyId: string): Promise<{ id: string; tenantId: string; revokedAt: string }> {
    const tenantId = parseTenantId(rawTenantId);
    if (!tenantId) throw new GeopayError('tenant_not_found');
    const revoked = await this.repos.apiKeys.revoke(tenantId, keyId);
    if (!revoked) throw new GeopayError(await this.repos.tenants.get(tenantId) ? 'key_not_found' : 'tenant_not_found');
    this.principals.forget((_hash, p) => p?.keyId === revoked.id);
    return { id: revoked.id, tenantId, revokedAt: revoked.revokedAt };
  }

  async create(r: { key: string; hash: string; name: string }): Promise<Outcome<TenantRow>> {
    return this.keys.run(ADMIN_SCOPE, r.key, r.hash, async () => {
      const id = makeTenantId(uuidv7Hex(Date.now(), randomBytes(10)));
      const res = await this.repos.tenants.createOnce({ scope: ADMIN_SCOPE, key: r.key, requestHash: r.hash, statusCode: STORED_CREATED }, { id, name: r.name });
      return keyedOutcome(res, r.hash, (created) => created);
    });
  }

  list(): Promise<TenantRow[]> {
    return this.repos.tenants.list(1000);
  }

  /** A new key for the tenant. The secret is shown once: a replay answers the key's id without it. */
  async createKey(r: { key: string; tenantId: string; hash: (tenantId: string) => string }): Promise<Outcome<{ id: string; tenantId: string; key: string }>> {
    const tenantId = parseTenantId(r.tenantId);
    if (!tenantId || !(await this.repos.tenants.get(tenantId))) throw new GeopayError('tenant_not_found');
    const hash = r.hash(tenantId);
    return this.keys.run(ADMIN_SCOPE, r.key, hash, async () => {
      const id = newKeyId();
      const secret = newApiKey('tenant');
      const res = await this.repos.apiKeys.createOnce({ scope: ADMIN_SCOPE, key: r.key, requestHash: hash, statusCode: STORED_CREATED }, { id, tenantId, secret });
      return keyedOutcome(res, hash, () => ({ id, tenantId, key: secret }));
    });
  }

  /** Installs ADMIN_API_KEY, or on a first start with none creates one and answers it (to print once). */
  async ensureAdminKey(configured: string): Promise<string | undefined> {
    if (configured) {
      await this.repos.apiKeys.insert({ id: newKeyId(), role: 'admin', tenantId: null, key: configured });
      return undefined;
    }
    if ((await this.repos.apiKeys.countAdmin()) > 0) return undefined;
    const key = newApiKey('admin');
    await this.repos.apiKeys.insert({ id: newKeyId(), role: 'admin', tenantId: null, key });
    return key;
  }

  async limits(raw: string): Promise<TenantLimits & { tenantId: string }> {
    const tenantId = parseTenantId(raw);
    const limits = tenantId ? await this.repos.tenants.limits(tenantId) : undefined;
    if (!tenantId || !limits) throw new GeopayError('tenant_not_found');
    return { tenantId, ...limits };
  }

  /** Replaces both overrides (so a retry is harmless); this node forgets its cached ones at once. */
  async setLimits(raw: string, limits: TenantLimits): Promise<TenantLimits & { tenantId: string }> {
    const tenantId = parseTenantId(raw);
    if (!tenantId || !(await this.repos.tenants.setLimits(tenantId, limits))) throw new GeopayError('tenant_not_found');
    this.overrides.forget((cachedTenantId) => cachedTenantId === tenantId);
    return { tenantId, readsPerS: limits.readsPerS, writesPerS: limits.writesPerS };
  }

  /**
   * The overrides the rate limiter applies, cached like principals. Limits that cannot be read
   * (never read before, or past their grace) mean the defaults: a control-database outage must
   * not turn into rate-limiter errors.
   */
  cachedLimits(tenantId: string, now: number): Promise<TenantLimits | undefined> {
    return this.overrides.get(tenantId, now, () => this.repos.tenants.limits(tenantId)).catch((err: unknown) => {
      // An outage is logged once, by the cache's health; anything else is worth a line each time.
      if (!(err instanceof GeopayError && err.code === 'control_plane_unavailable')) this.logger.warn({ err, tenant: tenantId }, 'tenant limits lookup failed, defaults apply');
      return undefined;
    });
  }
}
