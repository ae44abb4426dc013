// The node-to-node listener: only the /internal routes, on INTERNAL_HOST:INTERNAL_PORT (loopback
// by default), apart from the public port so that no client ever reaches them there. No bearer
// key, rate limit or OpenAPI: a peer proves itself by the signature of each request, checked
// here before any route runs (src/cluster/signature.ts).
import Fastify from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import { GeopayError } from '../domain/errors.ts';
import { SignatureVerifier } from '../cluster/signature.ts';
import { TRACED_REQUESTS, answerError, traceRequests } from './app.ts';
import type { Ctx, RoutePlugin } from './context.ts';
import { problem } from './errors.ts';
import { listen } from './listen.ts';

/** The largest forwarded request: a batch's worth of wire format, well above any one client request. */
const WIRE_BODY_LIMIT_BYTES = 10 * 1024 * 1024;

export interface InternalListener {
  app: FastifyInstance;
  /** What peers call and sign for: ADVERTISED_INTERNAL_URL, or the bound address. */
  url: string;
}

/** The listener, bound; undefined without CLUSTER_SECRET (nothing to check requests with). */
export async function startInternalListener(ctx: Ctx, routes: RoutePlugin[]): Promise<InternalListener | undefined> {
  const { config } = ctx;
  if (config.clusterSecret === '') return undefined;
  const logger: FastifyBaseLogger = ctx.logger.child({ listener: 'internal' });
  const app = Fastify({ loggerInstance: logger, bodyLimit: WIRE_BODY_LIMIT_BYTES, requestTimeout: config.requestTimeoutMs, ...TRACED_REQUESTS });
  // The forwarding node's trace goes on: this node's lines for the payment carry its id, and
  // so does the next hop (a leg the saga sends from here).
  traceRequests(app, { answerHeaders: false });
  app.setErrorHandler(answerError);
  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).type('application/problem+json').send(problem('not_found'));
  });
  // Every body stays the string that was signed; the routes decode it themselves.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => done(null, body));

  // Known once bound (port 0 picks one); a request cannot arrive before.
  let audience = config.advertisedInternalUrl;
  const authenticate = signatureCheck(ctx, () => audience);
  await app.register(async (scope) => {
    // After the body is read (the signature covers it), before any handler.
    scope.addHook('preHandler', authenticate);
    for (const plugin of routes) await plugin(scope, ctx);
  });
  const bound = await listen(app, config.internalHost, config.internalPort);
  audience ||= bound;
  return { app, url: audience };
}

/** The preHandler that refuses a request unless it is signed for this node, fresh and new. */
function signatureCheck(ctx: Ctx, audience: () => string): (req: FastifyRequest) => Promise<void> {
  const { clusterSecret: secret, clusterSignatureWindowMs: windowMs, clusterNonceLimit: maxNonces } = ctx.config;
  // One per listener: its nonce memory is what makes a replay fail.
  const verifier = new SignatureVerifier({ secret, windowMs, maxNonces, now: Date.now });
  return async (req) => {
    const body = typeof req.body === 'string' ? req.body : '';
    const verdict = verifier.verify({ audience: audience(), method: req.method, path: req.url, body, headers: req.headers });
    if (verdict === 'ok') return;
    if (verdict === 'busy') throw new GeopayError('shard_unavailable', 'too many forwarded requests in the replay window');
    // A stale verdict between two nodes of ours means their clocks drifted apart: worth a line.
    req.log.warn({ verdict }, 'forwarded request refused');
    throw new GeopayError('unauthorized');
  };
}
