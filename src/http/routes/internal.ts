// Node-to-node endpoints: a peer forwards an account's request here when this node owns the
// account's shard. Authenticated with the cluster secret, outside the tenant API (no bearer
// key, no rate limit); absent when no secret is configured.
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { GeopayError } from '../../domain/errors.ts';
import { CLUSTER_SECRET_HEADER, HOPS_HEADER } from '../../cluster/forward.ts';
import type { Ctx } from '../context.ts';

export function internalRoutes(app: FastifyInstance, ctx: Ctx): void {
  const secret = Buffer.from(ctx.config.clusterSecret);
  if (secret.length === 0) return;
  const { forwarded } = ctx.payments;
  const authenticate = (req: FastifyRequest): void => {
    const given = Buffer.from(String(req.headers[CLUSTER_SECRET_HEADER] ?? ''));
    if (given.length !== secret.length || !timingSafeEqual(given, secret)) throw new GeopayError('unauthorized');
  };
  const accountOf = (req: FastifyRequest) => (req.params as { id: string }).id;

  // The body is our own wire format (bigints tagged), parsed by hand, not by a schema.
  app.register(async (scope) => {
    scope.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: 10 * 1024 * 1024 }, (_req, body, done) => done(null, body));
    scope.post('/internal/v1/accounts/:id/commands', { schema: { hide: true } }, async (req, reply) => {
      authenticate(req);
      return reply.type('application/json').send(await forwarded.command(accountOf(req), req.body as string));
    });
    scope.get('/internal/v1/accounts/:id/state', { schema: { hide: true } }, async (req, reply) => {
      authenticate(req);
      const hops = Number(req.headers[HOPS_HEADER] ?? 0);
      return reply.type('application/json').send(await forwarded.state(accountOf(req), Number.isInteger(hops) ? hops : 0));
    });
  });
}
