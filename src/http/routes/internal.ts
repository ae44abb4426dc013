// Node-to-node endpoints: a peer forwards an account's request here when this node owns the
// account's shard. Authenticated with the cluster secret, outside the tenant API (no bearer
// key, no rate limit); absent when no secret is configured.
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { GeopayError } from '../../domain/errors.ts';
import { parseAccountId } from '../../domain/ids.ts';
import { decodeRequest, encodeResult, encodeState } from '../../actors/wire.ts';
import { CLUSTER_SECRET_HEADER } from '../../cluster/forward.ts';
import type { Ctx } from '../app.ts';

export function internalRoutes(app: FastifyInstance, ctx: Ctx): void {
  const secret = Buffer.from(ctx.config.clusterSecret);
  if (secret.length === 0) return;
  const authenticate = (req: FastifyRequest): void => {
    const given = Buffer.from(String(req.headers[CLUSTER_SECRET_HEADER] ?? ''));
    if (given.length !== secret.length || !timingSafeEqual(given, secret)) throw new GeopayError('unauthorized');
  };
  const accountOf = (req: FastifyRequest) => {
    const id = parseAccountId((req.params as { id: string }).id);
    if (!id) throw new GeopayError('account_not_found');
    return id;
  };

  // The body is our own wire format (bigints tagged), parsed by hand, not by a schema.
  app.register(async (scope) => {
    scope.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: 10 * 1024 * 1024 }, (_req, body, done) => done(null, body));
    scope.post('/internal/v1/accounts/:id/commands', { schema: { hide: true } }, async (req, reply) => {
      authenticate(req);
      const id = accountOf(req);
      const w = decodeRequest(req.body as string);
      const r = await ctx.registry.send(id, w.req, { at: w.at, hops: w.hops });
      return reply.type('application/json').send(encodeResult(r));
    });
    scope.get('/internal/v1/accounts/:id/state', { schema: { hide: true } }, async (req, reply) => {
      authenticate(req);
      const hops = Number(req.headers['x-geopay-hops'] ?? 0);
      const state = await ctx.registry.read(accountOf(req), Number.isInteger(hops) ? hops : 0);
      return reply.type('application/json').send(encodeState(state));
    });
  });
}
