// Per-tenant rate limits on the /v1 routes with @fastify/rate-limit: one budget per tenant (the
// admin key counts as one) and route class, reads (GET) and writes (the rest), counted in fixed
// one-second windows, in Redis when the node has one (shared by every node, reserved in runs:
// ./rate-limit-store.ts) or else in memory.
// Runs after authentication (a bad key answers 401, never 429); fails open when Redis does.
import assert from 'node:assert/strict';
import rateLimit from '@fastify/rate-limit';
import type { FastifyRateLimitStore } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { GeopayError } from '../domain/errors.ts';
import type { Ctx } from './context.ts';
import { leasedRedisStore } from './rate-limit-store.ts';

/** Limits are per second; a fixed window of one second counts them. */
const WINDOW_MS = 1_000;
/** Windows kept by the in-memory store: two per tenant active within a second. */
const MAX_LOCAL_WINDOWS = 20_000;
const FAIL_OPEN_LOG_EVERY_MS = 10_000;

type RouteClass = 'read' | 'write';
const classOf = (method: string): RouteClass => (method === 'GET' || method === 'HEAD' ? 'read' : 'write');

/**
 * Fixed windows in memory. Not the plugin's LocalStore: that one hands every caller the same
 * mutable counter, so requests whose increments land in one tick (a burst waiting on the same
 * overrides lookup) all read the last count and are all refused, those within the limit too.
 */
class MemoryStore implements FastifyRateLimitStore {
  // In order of window start, so the first entries are the first to expire.
  private readonly windows = new Map<string, { count: number; startMs: number }>();

  incr(key: string, cb: (err: Error | null, res?: { current: number; ttl: number }) => void, timeWindow: number): void {
    const now = Date.now();
    let w = this.windows.get(key);
    if (!w || w.startMs + timeWindow <= now) {
      this.windows.delete(key);
      for (const k of this.windows.keys()) {
        if (this.windows.size < MAX_LOCAL_WINDOWS) break;
        this.windows.delete(k);
      }
      w = { count: 0, startMs: now };
      this.windows.set(key, w);
    }
    w.count += 1;
    cb(null, { current: w.count, ttl: w.startMs + timeWindow - now });
  }

  child(): FastifyRateLimitStore {
    return this;
  }
}

/** Limits every route registered in `scope` after this call. Tenants' overrides come from the payments layer's short cache. */
export async function registerRateLimit(scope: FastifyInstance, deps: Pick<Ctx, 'config' | 'logger' | 'redis' | 'payments' | 'metrics'>): Promise<void> {
  const { config, logger, redis } = deps;
  const tenants = deps.payments.tenants;

  // Set for every request that reaches the hook below (asserted there).
  const principalOf = (req: FastifyRequest) => req.principal!;
  await scope.register(rateLimit, {
    // No hook of the plugin's own: ours below runs it and decides what a store failure means.
    global: false,
    timeWindow: WINDOW_MS,
    keyGenerator: (req) => {
      const p = principalOf(req);
      return `${p.role === 'admin' ? 'admin' : p.tenantId}:${classOf(req.method)}`;
    },
    max: async (req) => {
      const cls = classOf(req.method);
      const fallback = cls === 'read' ? config.rateLimitReadsPerS : config.rateLimitWritesPerS;
      const p = principalOf(req);
      if (p.role === 'admin' || !p.tenantId) return fallback;
      const o = await tenants.cachedLimits(p.tenantId, Date.now());
      return (cls === 'read' ? o?.readsPerS : o?.writesPerS) ?? fallback;
    },
    // Store errors reach our hook, which logs them and lets the request through.
    skipOnError: false,
    store: redis ? leasedRedisStore(redis, `${config.redisKeyPrefix}ratelimit:`) : MemoryStore,
  });
  const limit = scope.createRateLimit();

  // Fail open: for a payment API a lost limiter is a smaller harm than refusing payments, and
  // Redis is bounded by its command timeout. Logged at most every 10 s with the count let through.
  let unlimited = 0;
  let loggedAt = 0;
  scope.addHook('onRequest', async (req, reply) => {
    // The hook sits in the /v1 scope, so it runs after the root's authentication hook.
    assert.ok(req.principal, 'rate limiter runs after authentication');
    let r: Awaited<ReturnType<typeof limit>>;
    try {
      r = await limit(req);
    } catch (err) {
      unlimited += 1;
      deps.metrics.redisFailures.inc({ client: 'rate_limit' });
      const now = Date.now();
      if (now - loggedAt >= FAIL_OPEN_LOG_EVERY_MS) {
        logger.warn({ err, requests: unlimited }, 'rate limiter unavailable, requests let through');
        loggedAt = now;
        unlimited = 0;
      }
      return;
    }
    if (r.isAllowed) return; // no allow list: never
    void reply.header('x-ratelimit-limit', r.max).header('x-ratelimit-remaining', r.remaining).header('x-ratelimit-reset', r.ttlInSeconds);
    if (r.isExceeded) {
      throw new GeopayError('rate_limited', `${r.max} ${classOf(req.method)}s per second`, { retryAfterS: Math.max(1, r.ttlInSeconds) });
    }
  });
}
