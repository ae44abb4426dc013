// Money movement routes: deposits, withdrawals, transfers, refunds, and reading a transfer.
// 201 when the transfer is terminal, 202 while its credit is still in flight.
import type { FastifyInstance } from 'fastify';
import { requestHash } from '../../payments/index.ts';
import type { Ctx } from '../context.ts';
import { idempotencyKey, tenantOf } from '../context.ts';
import { send, transferAnswer } from '../answer.ts';
import { moneyBody, moneySchema, parseMoney, partialMoneySchema } from '../requests.ts';
import { idParams, idString } from '../schemas.ts';

type Metadata = Record<string, unknown>;

export function transferRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { transfers } = ctx.payments;

  app.post('/v1/transfers', {
    schema: moneySchema(moneyBody({ sourceAccountId: idString, destinationAccountId: idString }, ['sourceAccountId', 'destinationAccountId'])),
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true);
    const body = req.body as { sourceAccountId: string; destinationAccountId: string; amount: string; currency: string; metadata?: Metadata };
    const { amount, currency } = parseMoney(body);
    const hash = requestHash('POST /v1/transfers', {}, body);
    return send(reply, transferAnswer(await transfers.transfer({
      tenantId, key, hash, amount, currency, metadata: body.metadata ?? null,
      sourceAccountId: body.sourceAccountId, destinationAccountId: body.destinationAccountId, trace: req.trace,
    })));
  });

  for (const kind of ['deposit', 'withdrawal'] as const) {
    app.post(`/v1/${kind}s`, { schema: moneySchema(moneyBody({ accountId: idString }, ['accountId'])) }, async (req, reply) => {
      const tenantId = tenantOf(req);
      const key = idempotencyKey(req, true);
      const body = req.body as { accountId: string; amount: string; currency: string; metadata?: Metadata };
      const { amount, currency } = parseMoney(body);
      const hash = requestHash(`POST /v1/${kind}s`, {}, body);
      return send(reply, transferAnswer(await transfers.external(kind, { tenantId, key, hash, amount, currency, metadata: body.metadata ?? null, accountId: body.accountId, trace: req.trace })));
    });
  }

  app.post('/v1/transfers/:id/refunds', { schema: partialMoneySchema('money') }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true);
    const transferId = (req.params as { id: string }).id;
    const body = (req.body ?? {}) as { amount?: string; metadata?: Metadata };
    const hash = requestHash('POST /v1/transfers/:id/refunds', { originalId: transferId }, body);
    return send(reply, transferAnswer(await transfers.refund({ tenantId, key, hash, transferId, amount: body.amount, metadata: body.metadata ?? null, trace: req.trace })));
  });

  app.get('/v1/transfers/:id', {
    schema: { tags: ['money'], params: idParams, response: { 200: { $ref: 'Transfer#' } } },
  }, async (req) => transfers.get(tenantOf(req), (req.params as { id: string }).id));
}
