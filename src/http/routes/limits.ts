// Admin: a tenant's rate-limit overrides, in requests per second; null means the node's default
// (RATE_LIMIT_READS_PER_S, RATE_LIMIT_WRITES_PER_S). Other nodes see a change within CONTROL_CACHE_MS.
import type { FastifyInstance } from 'fastify';
import type { TenantLimits } from '../../payments/index.ts';
import type { Ctx } from '../context.ts';
import { requireAdmin } from '../context.ts';
import { idParams } from '../schemas.ts';

const perSecond = { type: ['integer', 'null'], minimum: 1, maximum: 1_000_000, description: 'Requests per second; null: the default' } as const;
const limitsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['readsPerS', 'writesPerS'],
  properties: { readsPerS: perSecond, writesPerS: perSecond },
} as const;
const limitsView = {
  type: 'object',
  required: ['tenantId', 'readsPerS', 'writesPerS'],
  properties: { tenantId: { type: 'string' }, readsPerS: perSecond, writesPerS: perSecond },
} as const;

export function limitRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { tenants } = ctx.payments;
  // PUT replaces both values, so a retry is harmless and needs no Idempotency-Key.
  app.put('/v1/tenants/:id/limits', {
    schema: { tags: ['admin'], params: idParams, body: limitsSchema, response: { 200: limitsView } },
  }, async (req) => {
    requireAdmin(req);
    return tenants.setLimits((req.params as { id: string }).id, req.body as TenantLimits);
  });

  app.get('/v1/tenants/:id/limits', {
    schema: { tags: ['admin'], params: idParams, response: { 200: limitsView } },
  }, async (req) => {
    requireAdmin(req);
    return tenants.limits((req.params as { id: string }).id);
  });
}
