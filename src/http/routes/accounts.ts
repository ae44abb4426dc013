// Account routes: open, read, freeze, unfreeze, close, statement. A tenant sees only its own
// accounts; any other id answers 404 exactly like one that does not exist.
import type { FastifyInstance } from 'fastify';
import { requestHash } from '../../payments/index.ts';
import type { Ctx } from '../context.ts';
import { idempotencyKey, tenantOf } from '../context.ts';
import type { OpenAccountBody } from '../requests.ts';
import { openAccountSchema, parseOpenAccount } from '../requests.ts';
import { send, toAnswer } from '../answer.ts';
import { idParams, idempotencyHeader } from '../schemas.ts';

const statementSchema = {
  tags: ['accounts'], params: idParams,
  querystring: {
    type: 'object', additionalProperties: false,
    properties: { limit: { type: 'string', pattern: '^[0-9]{1,4}$' }, cursor: { type: 'string', pattern: '^[0-9]{1,15}$' } },
  },
  response: {
    200: { type: 'object', properties: { data: { type: 'array', items: { $ref: 'Posting#' } }, nextCursor: { type: ['string', 'null'] } }, required: ['data', 'nextCursor'] },
  },
};

export function accountRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { accounts } = ctx.payments;

  app.post('/v1/accounts', { schema: openAccountSchema }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true);
    const body = req.body as OpenAccountBody;
    const { currency, overdraftLimit, region } = parseOpenAccount(body, ctx.config.region);
    const hash = requestHash('POST /v1/accounts', {}, body);
    return send(reply, toAnswer(await accounts.open({ tenantId, key, hash, currency, overdraftLimit, region, metadata: body.metadata ?? {}, trace: req.trace }), 201));
  });

  app.get('/v1/accounts/:id', {
    schema: { tags: ['accounts'], params: idParams, response: { 200: { $ref: 'Account#' } } },
  }, async (req) => accounts.get(tenantOf(req), (req.params as { id: string }).id, req.trace));

  for (const action of ['freeze', 'unfreeze', 'close'] as const) {
    app.post(`/v1/accounts/:id/${action}`, {
      schema: { tags: ['accounts'], params: idParams, headers: idempotencyHeader, response: { 200: { $ref: 'Account#' } } },
    }, async (req, reply) => {
      const tenantId = tenantOf(req);
      const key = idempotencyKey(req, false);
      return send(reply, toAnswer(await accounts.setStatus({
        tenantId, key, action, accountId: (req.params as { id: string }).id, hash: (id) => requestHash(`POST /v1/accounts/:id/${action}`, { id }, null), trace: req.trace,
      }), 200));
    });
  }

  app.get('/v1/accounts/:id/statement', { schema: statementSchema }, async (req) => {
    const q = req.query as { limit?: string; cursor?: string };
    return accounts.statement(tenantOf(req), (req.params as { id: string }).id, Number(q.limit ?? 50), q.cursor === undefined ? undefined : Number(q.cursor));
  });
}
