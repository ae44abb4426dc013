// POST /v1/transfers/batch: up to BATCH_MAX_ITEMS items under one Idempotency-Key, a status
// and a transfer or problem per item. The workflow (linked groups included) is in
// src/payments/batch.ts.
import type { FastifyInstance } from 'fastify';
import type { BatchItem } from '../../payments/batch.ts';
import { requestHash } from '../../payments/index.ts';
import type { Ctx } from '../context.ts';
import { idempotencyKey, tenantOf } from '../context.ts';
import { transferAnswer } from '../answer.ts';
import { amountString, currencyCode, idempotencyHeader, idString, metadata } from '../schemas.ts';

const batchSchema = (maxItems: number) => ({
  tags: ['money'], headers: idempotencyHeader,
  body: {
    type: 'object', additionalProperties: false, required: ['items'],
    properties: {
      items: {
        type: 'array', minItems: 1, maxItems,
        items: {
          type: 'object', additionalProperties: false, required: ['sourceAccountId', 'destinationAccountId', 'amount', 'currency'],
          properties: {
            sourceAccountId: idString, destinationAccountId: idString, amount: amountString, currency: currencyCode, metadata,
            linked: { type: 'string', minLength: 1, maxLength: 64, description: 'Items with the same value succeed or fail together' },
          },
        },
      },
    },
  },
  response: {
    200: {
      type: 'object', required: ['items'],
      properties: {
        items: {
          type: 'array',
          items: {
            type: 'object', required: ['index', 'status'],
            properties: { index: { type: 'integer' }, status: { type: 'integer' }, transfer: { $ref: 'Transfer#' }, error: { $ref: 'Problem#' } },
          },
        },
      },
    },
  },
});

export function batchRoutes(app: FastifyInstance, ctx: Ctx): void {
  const maxItems = ctx.config.batchMaxItems;
  app.post('/v1/transfers/batch', { bodyLimit: Math.max(ctx.config.bodyLimitBytes, maxItems * 1_024), schema: batchSchema(maxItems) }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true);
    const body = req.body as { items: BatchItem[] };
    const hash = requestHash('POST /v1/transfers/batch', {}, body);
    const batch = await ctx.payments.batches.run(tenantId, key, hash, body.items, req.trace);
    if (batch.replayed) void reply.header('idempotent-replayed', 'true');
    return {
      items: batch.items.map((o, index) => {
        const a = transferAnswer(o);
        return a.status >= 400 ? { index, status: a.status, error: a.body } : { index, status: a.status, transfer: a.body };
      }),
    };
  });
}
