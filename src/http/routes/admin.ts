// Admin routes: tenants, their API keys (shown once, stored hashed, revoked), the cluster map
// and the actor inspection endpoint. The admin key alone may call them.
import type { FastifyInstance } from 'fastify';
import { requestHash } from '../../payments/index.ts';
import type { Ctx } from '../context.ts';
import { idempotencyKey, requireAdmin } from '../context.ts';
import { send, toAnswer } from '../answer.ts';
import { idParams, idString, idempotencyHeader } from '../schemas.ts';

const createTenantSchema = {
  tags: ['admin'], headers: idempotencyHeader,
  body: { type: 'object', additionalProperties: false, required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 200 } } },
  response: { 201: { $ref: 'Tenant#' } },
};

const createKeySchema = {
  tags: ['admin'], params: idParams, headers: idempotencyHeader,
  response: {
    201: { type: 'object', properties: { id: { type: 'string' }, tenantId: { type: 'string' }, key: { type: 'string' } }, required: ['id', 'tenantId'] },
  },
};

// DELETE sets revoked_at once and answers it again on a repeat, so a retry needs no Idempotency-Key.
const revokeKeySchema = {
  tags: ['admin'],
  params: { type: 'object', properties: { id: idString, keyId: idString }, required: ['id', 'keyId'], additionalProperties: false },
  response: {
    200: {
      type: 'object', required: ['id', 'tenantId', 'revokedAt'],
      properties: { id: { type: 'string' }, tenantId: { type: 'string' }, revokedAt: { type: 'string', format: 'date-time' } },
    },
  },
};

const openObject = { 200: { type: 'object', additionalProperties: true } };

export function adminRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { tenants, inspection } = ctx.payments;

  app.post('/v1/tenants', { schema: createTenantSchema }, async (req, reply) => {
    requireAdmin(req);
    const key = idempotencyKey(req, true);
    const body = req.body as { name: string };
    return send(reply, toAnswer(await tenants.create({ key, hash: requestHash('POST /v1/tenants', {}, body), name: body.name }), 201));
  });

  app.get('/v1/tenants', {
    schema: { tags: ['admin'], response: { 200: { type: 'object', properties: { data: { type: 'array', items: { $ref: 'Tenant#' } } } } } },
  }, async (req) => {
    requireAdmin(req);
    return { data: await tenants.list() };
  });

  app.post('/v1/tenants/:id/keys', { schema: createKeySchema }, async (req, reply) => {
    requireAdmin(req);
    const key = idempotencyKey(req, true);
    return send(reply, toAnswer(await tenants.createKey({
      key, tenantId: (req.params as { id: string }).id, hash: (tenantId) => requestHash('POST /v1/tenants/:id/keys', { tenantId }, null),
    }), 201));
  });

  app.delete('/v1/tenants/:id/keys/:keyId', { schema: revokeKeySchema }, async (req) => {
    requireAdmin(req);
    const { id, keyId } = req.params as { id: string; keyId: string };
    return tenants.revokeKey(id, keyId);
  });

  app.get('/v1/cluster', { schema: { tags: ['admin'], response: openObject } }, async (req) => {
    requireAdmin(req);
    return inspection.cluster();
  });

  app.get('/v1/actors/accounts/:id', { schema: { tags: ['admin'], params: idParams, response: openObject } }, async (req) => {
    requireAdmin(req);
    return inspection.account((req.params as { id: string }).id);
  });
}
