// buildApp(ctx, routes): the fastify server. Auth by bearer key (hashed at rest), problem+json
// errors with stable codes, a body limit, JSON schemas everywhere, OpenAPI at /docs. The
// routes are plugins the composition root hands in; this module imports none of them.
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { ErrorCode } from '../domain/errors.ts';
import { ERRORS as CODES, GeopayError } from '../domain/errors.ts';
import { accountSchema, holdSchema, postingSchema, problemSchema, tenantSchema, transferSchema } from './schemas.ts';
import { jsonProblem, jsonbOrder } from './json-guard.ts';
import { registerRateLimit } from './rate-limit.ts';
import type { Ctx, Routes } from './context.ts';
import { DEFAULT_RETRY_AFTER_S, problem, statusOf } from './errors.ts';
import { documentRoute, swaggerOptions } from './openapi.ts';
import type { Metrics } from '../observability/metrics.ts';
import { statusClass } from '../observability/metrics.ts';

// /internal is not served on this listener (src/http/internal-app.ts is): left out of
// authentication so that it answers 404, the same with or without a key.
const PUBLIC = /^\/(healthz|readyz|metrics|docs|internal)(\/|$|\?)/;
/** Answered to the end, also while the server closes: orchestrators watch them. */
const HEALTH = /^\/(healthz|readyz|metrics)(\/|$|\?)/;

export async function buildApp(deps: Ctx, routes: Pick<Routes, 'root' | 'api'>): Promise<FastifyInstance> {
  // Widened to fastify's logger type, so the instance is the plain FastifyInstance routes take.
  const logger: FastifyBaseLogger = deps.logger;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: deps.config.bodyLimitBytes,
    requestTimeout: deps.config.requestTimeoutMs,
    genReqId: (req) => {
      const h = req.headers['x-request-id'];
      return typeof h === 'string' && /^[\w.-]{1,64}$/.test(h) ? h : randomUUID();
    },
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    // Requests that arrive while the server closes are answered by requestHooks, as
    // problem+json with Retry-After like every other 503, not by fastify's own plain body.
    return503OnClosing: false,
  });

  for (const s of [problemSchema, accountSchema, transferSchema, holdSchema, postingSchema, tenantSchema]) app.addSchema(s);

  // Before any route: every route's operationId, summary, tag and responses come from src/http/openapi.ts.
  app.addHook('onRoute', documentRoute);
  await app.register(swagger, swaggerOptions(deps.config));
  await app.register(swaggerUi, { routePrefix: '/docs' });

  requestHooks(app, deps);
  countRequests(app, deps.metrics);

  app.setErrorHandler(answerError);

  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).type('application/problem+json').send(problem('not_found'));
  });

  healthRoutes(app, deps);

  for (const plugin of routes.root) await plugin(app, deps);

  await app.register(async (scope) => {
    // First, so it limits every /v1 route; its hook runs after authentication.
    await registerRateLimit(scope, deps);
    for (const plugin of routes.api) await plugin(scope, deps);
  });

  return app;
}

/** Any error as problem+json with its code; the internal listener answers the same way. */
export function answerError(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const { code, detail, retryAfterS } = classify(err);
  const status = statusOf(code);
  // A 500 is our bug; a 503 is load or an outage, expected and answered: no stack per request.
  if (status === 500) req.log.error({ err }, 'request failed');
  else if (status >= 500) req.log.info({ code }, 'request answered unavailable');
  if (retryAfterS !== undefined) reply.header('retry-after', String(retryAfterS));
  void reply.code(status).type('application/problem+json').send(problem(code, detail));
}

/** Every request: its id echoed, refused while closing, authenticated (outside the public paths), its JSON body checked. */
function requestHooks(app: FastifyInstance, deps: Ctx): void {
  app.addHook('onSend', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (req, reply) => {
    if (!closing || HEALTH.test(req.url)) return;
    void reply.header('connection', 'close');
    throw new GeopayError('draining');
  });

  // Authentication: the payments layer caches principals briefly, by key hash.
  app.addHook('onRequest', async (req) => {
    if (PUBLIC.test(req.url)) return;
    const auth = req.headers.authorization;
    const m = typeof auth === 'string' ? /^Bearer ([\x21-\x7E]{1,256})$/.exec(auth) : null;
    if (!m) throw new GeopayError('unauthorized');
    const p = await deps.payments.tenants.principal(m[1]!, Date.now());
    if (!p) throw new GeopayError('unauthorized');
    req.principal = p;
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
}

/**
 * Every answer counted by route template, method and status class, with its latency; a
 * problem answer also by its stable code (read back from the body, errors only), a stored
 * answer as a replay.
 */
function countRequests(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onSend', async (req, reply, payload) => {
    if (reply.statusCode >= 400 && typeof payload === 'string') {
      const code = PROBLEM_CODE.exec(payload.slice(0, 400))?.[1];
      if (code !== undefined && code in CODES) metrics.httpErrors.inc({ code, status: String(reply.statusCode) });
      if (reply.statusCode === 429) metrics.rateLimited.inc();
    }
    if (reply.getHeader('idempotent-replayed') === 'true') metrics.idempotentReplays.inc({ operation: operationOf(req) });
    return payload;
  });
  app.addHook('onResponse', async (req, reply) => {
    const labels = { route: req.routeOptions.url ?? 'unmatched', method: req.method, status_class: statusClass(reply.statusCode) };
    metrics.httpRequests.inc(labels);
    metrics.httpDuration.observe(labels, reply.elapsedTime / 1_000);
  });
}

const PROBLEM_CODE = /"code":"([a-z_]{1,40})"/;
const operationOf = (req: FastifyRequest): string => `${req.method} ${req.routeOptions.url ?? 'unmatched'}`;

/** Liveness, readiness and the metrics, outside the tenant API. */
function healthRoutes(app: FastifyInstance, deps: Ctx): void {
  // The success answer only; src/http/openapi.ts adds the error answers (a string-keyed map, so the reply's status stays a number).
  const answers = (status: string): Record<string, object> => ({ 200: { type: 'object', properties: { status: { type: 'string', enum: [status] } }, required: ['status'] } });
  app.get('/healthz', { schema: { response: answers('ok') } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { response: answers('ready') } }, async (_req, reply) => {
    if (!deps.ready()) return reply.code(503).header('retry-after', '1').type('application/problem+json').send(problem('draining'));
    await deps.payments.ping();
    return { status: 'ready' };
  });

  // Prometheus text format (prom-client); no label carries an account or a tenant.
  app.get('/metrics', {
    schema: { response: { 200: { description: 'Prometheus text format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } } },
  }, async (_req, reply) => reply.type(deps.metrics.contentType).send(await deps.metrics.text()));
}

function classify(err: unknown): { code: ErrorCode; detail?: string; retryAfterS?: number } {
  if (err instanceof GeopayError) {
    const out: { code: ErrorCode; detail?: string; retryAfterS?: number } = { code: err.code };
    const status = statusOf(err.code);
    if (status < 500 && err.message !== CODES[err.code].title) out.detail = err.message;
    if (err.retryAfterS !== undefined) out.retryAfterS = err.retryAfterS;
    else if (status === 503) out.retryAfterS = DEFAULT_RETRY_AFTER_S;
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
  if (e.code && /^(ECONNREFUSED|ECONNRESET|57P01|08\w{3})$/.test(e.code)) return { code: 'database_unavailable', retryAfterS: DEFAULT_RETRY_AFTER_S };
  if (typeof e.statusCode === 'number' && e.statusCode === 413) return { code: 'body_too_large' };
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return { code: 'validation_failed', detail: String(e.message).slice(0, 300) };
  return { code: 'internal_error' };
}
