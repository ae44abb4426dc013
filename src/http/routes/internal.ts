// Node-to-node endpoints: a peer forwards an account's request here when this node owns the
// account's shard, and asks for this node's figures for its ops page. Served only by the internal listener (src/http/internal-app.ts), which
// checks each request's signature before any of these handlers runs; never on the public port.
import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HOPS_HEADER } from '../../cluster/signature.ts';
import type { Ctx } from '../context.ts';

export function internalRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { forwarded } = ctx.payments;
  const accountOf = (req: FastifyRequest) => (req.params as { id: string }).id;

  // The body is our own wire format (bigints tagged), kept by the listener as the string that
  // was signed and parsed here by hand, not by a schema. The answer streams: a line per
  // command as it finishes (src/actors/wire.ts answerLine).
  app.post('/internal/v1/commands', async (req, reply) => {
    const run = forwarded.commands(req.body as string);
    const lines = new PassThrough();
    void run((line) => lines.write(line)).finally(() => lines.end());
    return reply.type('application/x-ndjson').send(lines);
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
