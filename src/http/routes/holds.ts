// Hold routes: authorize, read, capture (all or part, through the transfer saga) and void.
import type { FastifyInstance } from 'fastify';
import { parseAmount, parseCurrency } from '../../domain/money.ts';
import { GeopayError } from '../../domain/errors.ts';
import { requestHash } from '../../payments/index.ts';
import type { Ctx } from '../context.ts';
import { idempotencyKey, tenantOf } from '../context.ts';
import { send, toAnswer, transferAnswer } from '../answer.ts';
import { partialMoneySchema } from '../requests.ts';
import { amountString, currencyCode, idParams, idempotencyHeader, idString, metadata } from '../schemas.ts';

type Metadata = Record<string, unknown>;
interface AuthorizeBody { sourceAccountId: string; destinationAccountId: string; amount: string; currency: string; metadata?: Metadata; expiresInSeconds?: number; multiCapture?: boolean }

const authorizeSchema = {
  tags: ['holds'], headers: idempotencyHeader,
  body: {
    type: 'object', additionalProperties: false, required: ['sourceAccountId', 'destinationAccountId', 'amount', 'currency'],
    properties: {
      sourceAccountId: idString, destinationAccountId: idString, amount: amountString, currency: currencyCode, metadata,
      expiresInSeconds: { type: 'integer', minimum: 1 }, multiCapture: { type: 'boolean' },
    },
  },
  response: { 201: { $ref: 'Hold#' } },
};

export function holdRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { holds } = ctx.payments;

  app.post('/v1/holds', { schema: authorizeSchema }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true);
    const body = req.body as AuthorizeBody;
    const amount = parseAmount(body.amount);
    if (!amount.ok) throw new GeopayError('invalid_amount');
    const currency = parseCurrency(body.currency);
    if (!currency.ok) throw new GeopayError('unknown_currency');
    const hash = requestHash('POST /v1/holds', {}, body);
    return send(reply, toAnswer(await holds.authorize({
      tenantId, key, hash, sourceAccountId: body.sourceAccountId, destinationAccountId: body.destinationAccountId, amount: amount.value,
      currency: currency.value, metadata: body.metadata ?? null, expiresInSeconds: body.expiresInSeconds, multiCapture: body.multiCapture ?? false, trace: req.trace,
    }), 201));
  });

  app.get('/v1/holds/:id', {
    schema: { tags: ['holds'], params: idParams, response: { 200: { $ref: 'Hold#' } } },
  }, async (req) => holds.get(tenantOf(req), (req.params as { id: string }).id));

  app.post('/v1/holds/:id/capture', { schema: partialMoneySchema('holds') }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true);
    const body = (req.body ?? {}) as { amount?: string; metadata?: Metadata };
    return send(reply, transferAnswer(await holds.capture({
      tenantId, key, holdId: (req.params as { id: string }).id, amount: body.amount, metadata: body.metadata ?? null,
      hash: (holdId) => requestHash('POST /v1/holds/:id/capture', { holdId }, body), trace: req.trace,
    })));
  });

  app.post('/v1/holds/:id/void', {
    schema: { tags: ['holds'], params: idParams, headers: idempotencyHeader, response: { 200: { $ref: 'Hold#' } } },
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, false);
    return send(reply, toAnswer(await holds.void({
      tenantId, key, holdId: (req.params as { id: string }).id, hash: (holdId) => requestHash('POST /v1/holds/:id/void', { holdId }, null), trace: req.trace,
    }), 200));
  });
}
