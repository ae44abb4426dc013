// The ops page: GET /v1/ops, its data, for the admin key; and GET /ops with its assets, served
// without a key since they hold no data (the page asks for the key and sends it to /v1/ops).
// The assets are files beside this module (src/http/ops/), read once at start and served with
// a Content-Security-Policy that allows this server alone: nothing comes from a CDN.
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { Ctx } from '../context.ts';
import { requireAdmin } from '../context.ts';

const ASSETS = {
  '/ops': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/ops/ops.js': { file: 'ops.js', type: 'text/javascript; charset=utf-8' },
  '/ops/ops.css': { file: 'ops.css', type: 'text/css; charset=utf-8' },
  '/ops/favicon.svg': { file: 'favicon.svg', type: 'image/svg+xml' },
} as const;

const CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
  "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

/** GET /ops and its files; left out of the OpenAPI document, which is about the API. */
export function opsPageRoutes(app: FastifyInstance): void {
  for (const [path, asset] of Object.entries(ASSETS)) {
    const body = readFileSync(new URL(`../ops/${asset.file}`, import.meta.url));
    app.get(path, { schema: { hide: true } }, async (_req, reply) => reply
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      // A new version's page comes with its server: never a stale script against a new document.
      .header('cache-control', 'no-cache')
      .type(asset.type)
      .send(body));
  }
}

const opsSchema = {
  tags: ['admin'],
  response: { 200: { type: 'object', additionalProperties: true, description: 'The cluster map by region, each node\'s transfers/s and p99, hot accounts, transfers in flight, webhook backlog' } },
};

export function opsRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { ops } = ctx.payments;
  app.get('/v1/ops', { schema: opsSchema }, async (req) => {
    requireAdmin(req);
    return ops.page();
  });
}
