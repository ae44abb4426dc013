// Node-to-node endpoints: a peer forwards an account's request here when this node owns the
// account's shard, and asks for this node's figures for its ops page. Served only by the internal listener (src/http/internal-app.ts), which
// checks each request's signature before any of these handlers runs; never on the public port.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HOPS_HEADER } from '../../cluster/signature.ts';
import type { Ctx } from '../context.ts';

export function internalRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { forwarded } = ctx.payments;
  const accountOf = (req: FastifyRequest) => (req.params as { id: string }).id;

  // The body is our own wire format (bigints tagged), kept by the listener as the string that
  // was signed and parsed here by hand, not by a schema.
  app.post('/internal/v1/accounts/:id/commands', async (req, reply) => {
    return reply.type('application/json').send(await forwarded.command(accountOf(req), req.body as string, req.trace));
  });
  app.get('/internal/v1/accounts/:id/state', async (req, reply) => {
    const hops = Number(req.headers[HOPS_HEADER] ?? 0);
    return reply.type('application/json').send(await forwarded.state(accountOf(req), Number.isInteger(hops) ? hops : 0, req.trace));
  });
  // A read of a region's database, asked by a node that does not read it (src/payments/region-reads.ts).
  app.post('/internal/v1/regions/:region/reads', async (req, reply) => {
    const { region } = req.params as { region: string };
    return reply.type('application/json').send(await forwarded.regionRead(region, req.body as string));
  });
  // The ops page of another node asks each node for its own figures (src/payments/ops.ts).
  app.get('/internal/v1/ops/summary', async () => ctx.payments.ops.summary());
}
