// buildApp(deps): the fastify server. Auth by bearer key (hashed at rest), problem+json
// errors with stable codes, a body limit, JSON schemas everywhere, OpenAPI at /docs.
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import type { Config } from '../../config/settings.ts';
import type { Pool } from '../persistence/db.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import type { Ownership } from '../cluster/ownership.ts';
import type { ErrorCode } from '../domain/errors.ts';
import { ERRORS, GeopayError } from '../domain/errors.ts';
import { problem } from '../domain/views.ts';
import type { Principal } from '../persistence/queries.ts';
import { findPrincipal, hashKey } from '../persistence/queries.ts';
import { accountSchema, holdSchema, postingSchema, problemSchema, tenantSchema, transferSchema } from './schemas.ts';
import { InFlightKeys } from './idempotency.ts';
import { jsonProblem, jsonbOrder } from './json-guard.ts';
import { accountRoutes } from './routes/accounts.ts';
import { transferRoutes } from './routes/transfers.ts';
import { adminRoutes } from './routes/admin.ts';
import { limitRoutes } from './routes/limits.ts';
import { registerRateLimit } from './rate-limit.ts';
import { holdRoutes } from './routes/holds.ts';
import { batchRoutes } from './routes/batch.ts';
import { internalRoutes } from './routes/internal.ts';
import { baselineRoutes } from '../baseline/routes.ts';

export interface AppDeps {
  config: Config;
  pool: Pool;
  registry: AccountRegistry;
  ownership: Ownership;
  logger: Logger;
  /** False while starting or draining: /readyz answers 503. */
  ready: () => boolean;
  metrics: () => Record<string, { help: string; type: 'counter' | 'gauge'; value: number }>;
  /** Shared rate-limit counters; without it they are kept in memory, per node. */
  redis?: Redis | undefined;
  /** Business time in ms (command times, hold deadlines). */
  clock: () => number;
}

export interface Ctx extends AppDeps {
  keys: InFlightKeys;
  directory: import('./directory.ts').Directory;
}

declare module 'fastify' {
  interface FastifyRequest { principal?: Principal }
}

const PUBLIC = /^\/(healthz|readyz|metrics|docs|internal)(\/|$|\?)/;
const PRINCIPAL_TTL_MS = 5_000;

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as unknown as import("fastify").FastifyBaseLogger,
    bodyLimit: deps.config.bodyLimitBytes,
    requestTimeout: deps.config.requestTimeoutMs,
    genReqId: (req) => {
      const h = req.headers['x-request-id'];
      return typeof h === 'string' && /^[\w.-]{1,64}$/.test(h) ? h : randomUUID();
    },
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    return503OnClosing: true,
  });
  const { Directory } = await import('./directory.ts');
  const ctx: Ctx = { ...deps, keys: new InFlightKeys(deps.config.askTimeoutMs + deps.config.transferWaitMs), directory: new Directory(deps.pool) };

  for (const s of [problemSchema, accountSchema, transferSchema, holdSchema, postingSchema, tenantSchema]) app.addSchema(s);

  await app.register(swagger, {
    openapi: {
      info: { title: 'geopay', version: '0.1.0', description: 'Actor-model payment processor. Amounts are strings of integer minor units.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.addHook('onSend', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });

  // Authentication: a short cache keeps the key lookup off the hot path; only hashes are kept.
  const principals = new Map<string, { p: Principal | undefined; until: number }>();
  app.addHook('onRequest', async (req) => {
    if (PUBLIC.test(req.url)) return;
    const auth = req.headers.authorization;
    const m = typeof auth === 'string' ? /^Bearer ([\x21-\x7E]{1,256})$/.exec(auth) : null;
    if (!m) throw new GeopayError('unauthorized');
    const h = hashKey(m[1]!);
    const now = Date.now();
    let hit = principals.get(h);
    if (!hit || hit.until < now) {
      hit = { p: await findPrincipal(deps.pool, m[1]!), until: now + PRINCIPAL_TTL_MS };
      if (principals.size > 10_000) principals.clear();
      principals.set(h, hit);
    }
    if (!hit.p) throw new GeopayError('unauthorized');
    req.principal = hit.p;
  });

  // Only JSON bodies: anything else is 415, never parsed as something it is not.
  app.removeContentTypeParser('text/plain');
  app.addHook('preValidation', async (req) => {
    if (req.body === undefined || req.body === null) return;
    const problem = jsonProblem(req.body);
    if (problem) throw new GeopayError('validation_failed', `body: ${problem}`);
    const body = req.body as { metadata?: unknown };
    if (typeof body === 'object' && body.metadata !== undefined) body.metadata = jsonbOrder(body.metadata);
  });

  app.setErrorHandler((err: unknown, req: FastifyRequest, reply: FastifyReply) => {
    const { code, detail, retryAfterS } = classify(err);
    const status = ERRORS[code].status;
    // A 500 is our bug; a 503 is load or an outage, expected and answered: no stack per request.
    if (status === 500) req.log.error({ err }, 'request failed');
    else if (status >= 500) req.log.info({ code }, 'request answered unavailable');
    if (retryAfterS !== undefined) reply.header('retry-after', String(retryAfterS));
    void reply.code(status).type('application/problem+json').send(problem(code, detail));
  });

  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).type('application/problem+json').send(problem('not_found'));
  });

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    if (!deps.ready()) return reply.code(503).header('retry-after', '1').type('application/problem+json').send(problem('draining'));
    await deps.pool.query('SELECT 1');
    return { status: 'ready' };
  });

  // Prometheus text format; counters only, nothing about any tenant.
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const m = deps.metrics();
    const lines = Object.entries(m).flatMap(([name, { help, type, value }]) => [
      `# HELP geopay_${name} ${help}`, `# TYPE geopay_${name} ${type}`, `geopay_${name} ${value}`,
    ]);
    return reply.type('text/plain; version=0.0.4').send(`${lines.join('\n')}\n`);
  });

  internalRoutes(app, ctx);

  await app.register(async (scope) => {
    // First, so it limits every /v1 route; its hook runs after authentication.
    const limits = await registerRateLimit(scope, ctx);
    adminRoutes(scope, ctx);
    limitRoutes(scope, ctx, limits);
    if (deps.config.engine === 'baseline') {
      // The row-locking comparison engine serves accounts and money movement, nothing else.
      baselineRoutes(scope, ctx);
    } else {
      accountRoutes(scope, ctx);
      transferRoutes(scope, ctx);
      holdRoutes(scope, ctx);
      batchRoutes(scope, ctx);
    }
  });

  return app;
}

function classify(err: unknown): { code: ErrorCode; detail?: string; retryAfterS?: number } {
  if (err instanceof GeopayError) {
    const out: { code: ErrorCode; detail?: string; retryAfterS?: number } = { code: err.code };
    if (err.status < 500 && err.message !== ERRORS[err.code].title) out.detail = err.message;
    if (err.retryAfterS !== undefined) out.retryAfterS = err.retryAfterS;
    return out;
  }
  const e = err as { code?: string; validation?: unknown; message?: string; statusCode?: number };
  if (Array.isArray(e.validation)) {
    // Amount and currency fields answer their own codes whatever is wrong with them.
    const path = String((e.validation[0] as { instancePath?: string } | undefined)?.instancePath ?? '');
    if (/\/(amount|overdraftLimit)$/.test(path)) return { code: 'invalid_amount' };
    if (/\/currency$/.test(path)) return { code: 'unknown_currency' };
    return { code: 'validation_failed', detail: String(e.message).slice(0, 300) };
  }
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { code: 'malformed_json' };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { code: 'body_too_large' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { code: 'unsupported_media_type' };
    default:
      break;
  }
  if (err instanceof SyntaxError) return { code: 'malformed_json' };
  if (e.code && /^(ECONNREFUSED|ECONNRESET|57P01|08\w{3})$/.test(e.code)) return { code: 'database_unavailable', retryAfterS: 1 };
  if (typeof e.statusCode === 'number' && e.statusCode === 413) return { code: 'body_too_large' };
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return { code: 'validation_failed', detail: String(e.message).slice(0, 300) };
  return { code: 'internal_error' };
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
export function idempotencyKey(req: FastifyRequest, required: boolean): string | undefined {
  const k = req.headers['idempotency-key'];
  if (k === undefined) {
    if (required) throw new GeopayError('idempotency_key_required');
    return undefined;
  }
  if (typeof k !== 'string' || !/^[\x21-\x7E]{1,255}$/.test(k)) throw new GeopayError('validation_failed', 'Idempotency-Key must be 1-255 printable ASCII characters');
  return k;
}
