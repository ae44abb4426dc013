// What every route plugin shares, in a leaf module: the dependencies a route may use (the
// payments layer, settings, logger), the plugin type, and the helpers that read who is asking
// and with which Idempotency-Key. Routes import this; nothing here imports a route.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import type { Config } from '../../config/settings.ts';
import { GeopayError } from '../domain/errors.ts';
import type { Payments, Principal } from '../payments/index.ts';
import type { Metrics } from '../observability/metrics.ts';

export interface Ctx {
  config: Config;
  logger: Logger;
  payments: Payments;
  /** False while starting or draining: /readyz answers 503. */
  ready: () => boolean;
  /** This node's Prometheus metrics (src/observability/metrics.ts). */
  metrics: Metrics;
  /** Shared rate-limit counters; without it they are kept in memory, per node. */
  redis?: Redis | undefined;
}

/** A group of routes: a fastify plugin over the shared context. */
export type RoutePlugin = (app: FastifyInstance, ctx: Ctx) => void | Promise<void>;

/**
 * The routes buildApp registers: `root` outside the tenant API (no bearer key, no rate limit),
 * `api` under /v1; and `internal`, the node-to-node routes that only the internal listener serves.
 */
export interface Routes { root: RoutePlugin[]; api: RoutePlugin[]; internal: RoutePlugin[] }

declare module 'fastify' {
  interface FastifyRequest { principal?: Principal }
}

/** The tenant of a request, or 403 for the admin key on tenant routes. */
export function tenantOf(req: FastifyRequest): string {
  const p = req.principal;
  if (!p || p.role !== 'tenant' || !p.tenantId) throw new GeopayError('forbidden');
  return p.tenantId;
}

export function requireAdmin(req: FastifyRequest): void {
  if (req.principal?.role !== 'admin') throw new GeopayError('forbidden');
}

/** The Idempotency-Key of a request; required where `required`. */
export function idempotencyKey(req: FastifyRequest, required: true): string;
export function idempotencyKey(req: FastifyRequest, required: false): string | undefined;
export function idempotencyKey(req: FastifyRequest, required: boolean): string | undefined {
  const k = req.headers['idempotency-key'];
  if (k === undefined) {
    if (required) throw new GeopayError('idempotency_key_required');
    return undefined;
  }
  if (typeof k !== 'string' || !/^[\x21-\x7E]{1,255}$/.test(k)) throw new GeopayError('validation_failed', 'Idempotency-Key must be 1-255 printable ASCII characters');
  return k;
}
