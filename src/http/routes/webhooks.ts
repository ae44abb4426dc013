// Webhook endpoints of the caller's tenant (Standard Webhooks; docs/webhooks.md): create with
// the secret shown once, list, read, delete, rotate the secret, the attempts of its
// deliveries, and a redelivery.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { requestHash } from '../../payments/index.ts';
import type { Ctx } from '../context.ts';
import { idempotencyKey, tenantOf } from '../context.ts';
import { send, toAnswer } from '../answer.ts';
import { idParams, idString, idempotencyHeader } from '../schemas.ts';

const endpoint = {
  type: 'object', required: ['id', 'url', 'eventTypes', 'createdAt', 'disabledAt', 'disabledReason', 'previousSecretExpiresAt'],
  properties: {
    id: { type: 'string' }, url: { type: 'string' }, eventTypes: { type: 'array', items: { type: 'string' } }, createdAt: { type: 'string' },
    disabledAt: { type: ['string', 'null'] }, disabledReason: { type: ['string', 'null'] }, previousSecretExpiresAt: { type: ['string', 'null'] },
    secret: { type: 'string', description: 'whsec_...: in the answer of the create or rotation only, never again (a replay answers without it)' },
  },
} as const;

const page = {
  type: 'object', additionalProperties: false,
  properties: { limit: { type: 'string', pattern: '^[0-9]{1,4}$' }, cursor: { type: 'string', maxLength: 80 } },
} as const;

const attempt = {
  type: 'object', required: ['id', 'deliveryId', 'eventType', 'attempt', 'at', 'status', 'durationMs', 'error', 'responseExcerpt'],
  properties: {
    id: { type: 'string' }, deliveryId: { type: 'string', description: 'the webhook-id header of every attempt of this delivery' },
    eventType: { type: 'string' }, attempt: { type: 'integer' }, at: { type: 'string' }, status: { type: ['integer', 'null'] },
    durationMs: { type: 'integer' }, error: { type: ['string', 'null'] }, responseExcerpt: { type: ['string', 'null'] },
  },
} as const;

const attemptsPage = { type: 'object', required: ['data', 'nextCursor'], properties: { data: { type: 'array', items: attempt }, nextCursor: { type: ['string', 'null'] } } } as const;

const limitOf = (raw: string | undefined): number => Math.min(Math.max(Number(raw ?? 50), 1), 500);
const idOf = (req: FastifyRequest): string => (req.params as { id: string }).id;

export function webhookRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { webhooks } = ctx.payments;

  app.post('/v1/webhook-endpoints', {
    schema: {
      tags: ['webhooks'], headers: idempotencyHeader,
      body: {
        type: 'object', additionalProperties: false, required: ['url'],
        properties: { url: { type: 'string', minLength: 1, maxLength: 2048 }, eventTypes: { type: 'array', maxItems: 64, items: { type: 'string', maxLength: 200 } } },
      },
      response: { 201: endpoint },
    },
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true);
    const body = req.body as { url: string; eventTypes?: string[] };
    const hash = requestHash('POST /v1/webhook-endpoints', {}, body);
    return send(reply, toAnswer(await webhooks.create({ tenantId, key, hash, url: body.url, eventTypes: body.eventTypes ?? [] }), 201));
  });

  app.get('/v1/webhook-endpoints', {
    schema: { tags: ['webhooks'], querystring: page, response: { 200: { type: 'object', required: ['data', 'nextCursor'], properties: { data: { type: 'array', items: endpoint }, nextCursor: { type: ['string', 'null'] } } } } },
  }, async (req) => {
    const q = req.query as { limit?: string; cursor?: string };
    return webhooks.list(tenantOf(req), limitOf(q.limit), q.cursor);
  });

  app.get('/v1/webhook-endpoints/:id', { schema: { tags: ['webhooks'], params: idParams, response: { 200: endpoint } } }, async (req) => webhooks.get(tenantOf(req), idOf(req)));

  app.delete('/v1/webhook-endpoints/:id', { schema: { tags: ['webhooks'], params: idParams, response: { 204: { type: 'null', description: 'Deleted' } } } }, async (req, reply) => {
    await webhooks.delete(tenantOf(req), idOf(req));
    return reply.code(204).send();
  });

  app.post('/v1/webhook-endpoints/:id/rotate-secret', { schema: { tags: ['webhooks'], params: idParams, headers: idempotencyHeader, response: { 200: endpoint } } }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const id = idOf(req);
    const key = idempotencyKey(req, true);
    const hash = requestHash('POST /v1/webhook-endpoints/:id/rotate-secret', { id }, {});
    return send(reply, toAnswer(await webhooks.rotate({ tenantId, id, key, hash }), 200));
  });

  app.get('/v1/webhook-endpoints/:id/deliveries', {
    schema: {
      tags: ['webhooks'], params: idParams, querystring: page,
      response: { 200: attemptsPage },
    },
  }, async (req) => {
    const q = req.query as { limit?: string; cursor?: string };
    const r = await webhooks.attempts(tenantOf(req), idOf(req), limitOf(q.limit), q.cursor);
    return { data: r.data.map((a) => ({ ...a, at: a.at instanceof Date ? a.at.toISOString() : a.at })), nextCursor: r.nextCursor };
  });

  app.post('/v1/webhook-endpoints/:id/deliveries/:deliveryId/redeliver', {
    schema: {
      tags: ['webhooks'], headers: idempotencyHeader,
      params: { type: 'object', required: ['id', 'deliveryId'], additionalProperties: false, properties: { id: idString, deliveryId: idString } },
      response: { 202: { type: 'object', required: ['id', 'state'], properties: { id: { type: 'string' }, state: { type: 'string' } } } },
    },
  }, async (req, reply) => {
    idempotencyKey(req, true);
    const { id, deliveryId } = req.params as { id: string; deliveryId: string };
    return reply.code(202).send(await webhooks.redeliver(tenantOf(req), id, deliveryId));
  });
}
