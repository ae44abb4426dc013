// Suspense routes (admin): money returned to accounts closed while it was on its way, one
// balance per tenant, region and currency, and its payout to an account of the same tenant.
import type { FastifyInstance } from 'fastify';
import { requestHash } from '../../payments/index.ts';
import type { Ctx } from '../context.ts';
import { idempotencyKey, requireAdmin } from '../context.ts';
import { send, transferAnswer } from '../answer.ts';
import { amountString, idParams, idString, idempotencyHeader, metadata } from '../schemas.ts';

type Metadata = Record<string, unknown>;
interface PayoutBody { destinationAccountId: string; amount?: string; metadata?: Metadata }

const listSchema = {
  tags: ['admin'],
  response: {
    200: {
      type: 'object', required: ['data'],
      properties: {
        data: {
          type: 'array',
          items: {
            type: 'object', required: ['accountId', 'region', 'currency', 'balance', 'updatedAt'],
            properties: {
              accountId: { type: 'string' }, tenantId: { type: ['string', 'null'] }, region: { type: 'string' }, currency: { type: 'string' },
              balance: { type: 'string' }, updatedAt: { type: 'string' },
            },
          },
        },
      },
    },
  },
};

const payoutSchema = {
  tags: ['admin'], params: idParams, headers: idempotencyHeader,
  body: {
    type: 'object', additionalProperties: false, required: ['destinationAccountId'],
    properties: { destinationAccountId: idString, amount: amountString, metadata },
  },
  response: { 201: { $ref: 'Transfer#' }, 202: { $ref: 'Transfer#' } },
};

export function suspenseRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { suspense } = ctx.payments;

  app.get('/v1/suspense', { schema: listSchema }, async (req) => {
    requireAdmin(req);
    return { data: await suspense.list() };
  });

  app.post('/v1/suspense/:id/payouts', { schema: payoutSchema }, async (req, reply) => {
    requireAdmin(req);
    const key = idempotencyKey(req, true);
    const accountId = (req.params as { id: string }).id;
    const body = req.body as PayoutBody;
    const hash = requestHash('POST /v1/suspense/:id/payouts', { accountId }, body);
    return send(reply, transferAnswer(await suspense.payout({
      key, hash, accountId, destinationAccountId: body.destinationAccountId, amount: body.amount, metadata: body.metadata ?? null, trace: req.trace,
    })));
  });
}
