// Binding a fastify instance and naming the URL it is reachable at: the bound port (PORT=0
// picks a free one) on the configured host, an IPv6 literal in brackets.
import type { FastifyInstance } from 'fastify';

export async function listen(app: FastifyInstance, host: string, port: number): Promise<string> {
  await app.listen({ port, host });
  const addr = app.server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  return `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
}
