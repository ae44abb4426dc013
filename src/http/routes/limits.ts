// Admin: a tenant's rate-limit overrides, in requests per second; null means the node's default
// (RATE_LIMIT_READS_PER_S, RATE_LIMIT_WRITES_PER_S). Other nodes see a change within 5 s.
import type { FastifyInstance } from 'fastify';
import { GeopayError } from '../../domain/errors.ts';
import { parseTenantId } from '../../domain/ids.ts';
import { getTenantLimits, setTenantLimits } from '../../persistence/limits.ts';
import type { TenantLimits } from '../../persistence/limits.ts';
import type { Ctx } from '../app.ts';
import { requireAdmin } from '../app.ts';
import type { LimitOverrides } from '../rate-limit.ts';
import { errorResponses, idParams } from '../schemas.ts';

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

export function limitRoutes(app: FastifyInstance, ctx: Ctx, overrides: LimitOverrides): void {
  // PUT replaces both values, so a retry is harmless and needs no Idempotency-Key.
  app.put('/v1/tenants/:id/limits', {
    schema: { tags: ['admin'], params: idParams, body: limitsSchema, response: { 200: limitsView, ...errorResponses } },
  }, async (req) => {
    requireAdmin(req);
    const tenantId = parseTenantId((req.params as { id: string }).id);
    const body = req.body as TenantLimits;
    if (!tenantId || !(await setTenantLimits(ctx.pool, tenantId, body))) throw new GeopayError('tenant_not_found');
    overrides.forget(tenantId);
    return { tenantId, readsPerS: body.readsPerS, writesPerS: body.writesPerS };
  });

  app.get('/v1/tenants/:id/limits', {
    schema: { tags: ['admin'], params: idParams, response: { 200: limitsView, ...errorResponses } },
  }, async (req) => {
    requireAdmin(req);
    const tenantId = parseTenantId((req.params as { id: string }).id);
    const limits = tenantId ? await getTenantLimits(ctx.pool, tenantId) : undefined;
    if (!tenantId || !limits) throw new GeopayError('tenant_not_found');
    return { tenantId, ...limits };
  });
}
