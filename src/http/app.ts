// buildApp(ctx, routes): the fastify server. Auth by bearer key (hashed at rest), problem+json
// errors with stable codes, a body limit, JSON schemas everywhere, OpenAPI at /docs. The
// routes are plugins the composition root hands in; this module imports none of them.
import type { IncomingMessage } from 'node:http';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Bindings, ChildLoggerOptions } from 'pino';
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
import type { TraceContext } from '../observability/trace.ts';
import { TRACEPARENT_HEADER, formatTraceparent, newTraceId, parseTraceparent, spanIn } from '../observability/trace.ts';

// /internal is not served on this listener (src/http/internal-app.ts is): left out of
// authentication so that it answers 404, the same with or without a key. /ops is the ops
// page's files, which hold no data: the page sends the admin key to /v1/ops itself.
const PUBLIC = /^\/(healthz|readyz|metrics|docs|internal|ops)(\/|$|\?)/;
/** Answered to the end, also while the server closes: orchestrators watch them. */
const HEALTH = /^\/(healthz|readyz|metrics)(\/|$|\?)/;

export async function buildApp(deps: Ctx, routes: Pick<Routes, 'root' | 'api'>): Promise<FastifyInstance> {
  // Widened to fastify's logger type, so the instance is the plain FastifyInstance routes take.
  const logger: FastifyBaseLogger = deps.logger;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: deps.config.bodyLimitBytes,
    requestTimeout: deps.config.requestTimeoutMs,
    ...TRACED_REQUESTS,
    childLoggerFactory: withClientRequestId,
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

  // First: every later hook, the handler and what it forwards run in the request's trace.
  traceRequests(app, { answerHeaders: true });
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
  // Each error answer is logged here once. A 500 is our bug: its stack. A 503 is an outage or
  // load, answered and retryable: its code and cause, no stack per request. A 4xx is the
  // client's: debug only, the completed-request line already has its status.
  if (status === 500) req.log.error({ err, code }, 'request failed');
  else if (status >= 500) req.log.warn({ code, ...unavailableCause(err) }, 'request answered unavailable');
  else req.log.debug({ code }, 'request refused');
  if (retryAfterS !== undefined) reply.header('retry-after', String(retryAfterS));
  void reply.code(status).type('application/problem+json').send(problem(code, detail));
}

declare module 'fastify' {
  interface FastifyRequest {
    /** This node's span of the request's trace (set first thing, by traceRequests). */
    trace?: TraceContext;
  }
}

/**
 * Fastify options of both listeners: a request's id is its trace id, the caller's when it sent
 * a valid traceparent, and every log line of the request carries it as `trace`, the field the
 * other log lines about a payment (forwarding, saga, relay) use too.
 */
export const TRACED_REQUESTS = {
  // Stateless: one for both listeners. (The top-level requestIdLogLabel option is deprecated.)
  logController: new LogController({ requestIdLogLabel: 'trace' }),
  genReqId: (req: IncomingMessage): string => parseTraceparent(req.headers[TRACEPARENT_HEADER])?.traceId ?? newTraceId(),
};

/**
 * This node's span of each request's trace, as `req.trace`: routes hand it to the payments
 * layer, which hands it to the registry, so what is forwarded carries it (src/observability/trace.ts).
 * `answerHeaders` puts traceparent and x-request-id on the answer.
 */
export function traceRequests(app: FastifyInstance, opts: { answerHeaders: boolean }): void {
  app.decorateRequest('trace', undefined);
  app.addHook('onRequest', (req, _reply, done) => {
    req.trace = spanIn(req.id, parseTraceparent(req.headers[TRACEPARENT_HEADER])?.flags);
    done();
  });
  if (!opts.answerHeaders) return;
  // Callback hooks here and in countRequests: an async hook costs a promise per request.
  app.addHook('onSend', (req, reply, payload, done) => {
    // A client's own x-request-id comes back as sent; otherwise the trace id is the one to quote.
    reply.header('x-request-id', clientRequestId(req.headers['x-request-id']) ?? req.id);
    if (req.trace) reply.header(TRACEPARENT_HEADER, formatTraceparent(req.trace));
    done(null, payload);
  });
}

const REQUEST_ID = /^[\w.-]{1,64}$/;
const clientRequestId = (header: unknown): string | undefined => (typeof header === 'string' && REQUEST_ID.test(header) ? header : undefined);

/** A client's x-request-id stays on every line of its request (`requestId`), beside the trace id. */
function withClientRequestId(logger: FastifyBaseLogger, bindings: Bindings, opts: ChildLoggerOptions, raw: IncomingMessage): FastifyBaseLogger {
  const requestId = clientRequestId(raw.headers['x-request-id']);
  return logger.child(requestId === undefined ? bindings : { ...bindings, requestId }, opts);
}

interface Cause { code?: string; message: string }

/** What a 5xx other than a bug names as its reason: the error's detail and what caused it (no stack). */
function unavailableCause(err: unknown): { detail?: string; cause?: Cause } {
  // Not ours: a driver or socket error that classify() read as database_unavailable.
  if (!(err instanceof GeopayError)) return { cause: causeOf(err) };
  const out: { detail?: string; cause?: Cause } = {};
  if (err.message !== CODES[err.code].title) out.detail = err.message;
  if (err.cause !== undefined) out.cause = causeOf(err.cause);
  return out;
}

function causeOf(e: unknown): Cause {
  const c = e as { code?: unknown; message?: unknown } | null | undefined;
  return { ...(typeof c?.code === 'string' ? { code: c.code } : {}), message: String(c?.message ?? e) };
}

/** Every request: refused while closing, authenticated (outside the public paths), its JSON body checked. */
function requestHooks(app: FastifyInstance, deps: Ctx): void {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', (req, reply, done) => {
    if (!closing || HEALTH.test(req.url)) return done();
    void reply.header('connection', 'close');
    done(new GeopayError('draining'));
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
  app.addHook('onSend', (req, reply, payload, done) => {
    if (reply.statusCode >= 400 && typeof payload === 'string') {
      const code = PROBLEM_CODE.exec(payload.slice(0, 400))?.[1];
      if (code !== undefined && code in CODES) metrics.httpErrors.inc({ code, status: String(reply.statusCode) });
      if (reply.statusCode === 429) metrics.rateLimited.inc();
    }
    if (reply.getHeader('idempotent-replayed') === 'true') metrics.idempotentReplays.inc({ operation: operationOf(req) });
    done(null, payload);
  });
  // The labelled children, looked up once per route, method and class instead of hashing the
  // labels twice a request (bounded: the routes are templates).
  const children = new Map<string, { count: { inc(): void }; latency: { observe(v: number): void } }>();
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const cls = statusClass(reply.statusCode);
    const key = `${req.method} ${cls} ${route}`;
    let c = children.get(key);
    if (!c) {
      const labels = { route, method: req.method, status_class: cls };
      c = { count: metrics.httpRequests.labels(labels), latency: metrics.httpDuration.labels(labels) };
      children.set(key, c);
    }
    c.count.inc();
    c.latency.observe(reply.elapsedTime / 1_000);
    done();
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
