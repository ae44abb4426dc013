// HTTP routes of the row-locking baseline (ENGINE=baseline): geopay's paths, headers, schemas,
// request hashes and error codes for opening and reading accounts and moving money, served by
// src/baseline/engine.ts. Request schemas and parsing are shared with geopay (src/http/requests.ts).
import type { FastifyInstance } from 'fastify';
import type { AccountId } from '../domain/ids.ts';
import { parseAccountId, parseTransferId } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { Ctx } from '../http/app.ts';
import { idempotencyKey, tenantOf } from '../http/app.ts';
import { requestHash } from '../http/idempotency.ts';
import { send } from '../http/answer.ts';
import { errorResponses, idParams, idString } from '../http/schemas.ts';
import { BaselineEngine } from './engine.ts';
import type { OpenAccountBody } from '../http/requests.ts';
import { moneyBody, moneySchema, openAccountSchema, parseMoney, parseOpenAccount } from '../http/requests.ts';

/** Attempts of one request's transaction when PostgreSQL aborts it for a deadlock or serialization failure. */
const MAX_ATTEMPTS = 5;

/** A customer account id, or 404 as for any account the tenant cannot see. */
function customerId(raw: string): AccountId {
  const id = parseAccountId(raw);
  if (!id || id.startsWith('ext_')) throw new GeopayError('account_not_found');
  return id;
}

export function baselineRoutes(app: FastifyInstance, ctx: Ctx): void {
  const engine = new BaselineEngine(ctx.pool, { maxAttempts: MAX_ATTEMPTS, clock: ctx.clock });

  const cleanup = setInterval(() => {
    engine.deleteExpiredKeys(ctx.config.idempotencyRetentionMs)
      .then((n) => { if (n > 0) ctx.logger.info({ deleted: n }, 'expired baseline idempotency keys deleted'); })
      .catch((err: unknown) => ctx.logger.warn({ err }, 'baseline idempotency cleanup failed'));
  }, ctx.config.idempotencyCleanupMs);
  cleanup.unref();
  app.addHook('onClose', async () => {
    clearInterval(cleanup);
    if (engine.conflictRetries > 0) ctx.logger.info({ retries: engine.conflictRetries }, 'baseline transactions retried after lock conflicts');
  });

  app.post('/v1/accounts', { schema: openAccountSchema }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true)!;
    const body = req.body as OpenAccountBody;
    const { currency, overdraftLimit, region } = parseOpenAccount(body, ctx.config.region);
    const hash = requestHash('POST /v1/accounts', {}, body);
    return send(reply, await engine.openAccount({
      tenantId, key, hash, currency, region, overdraftLimit, metadata: body.metadata ?? {},
    }));
  });

  app.get('/v1/accounts/:id', {
    schema: { tags: ['accounts'], params: idParams, response: { 200: { $ref: 'Account#' }, ...errorResponses } },
  }, async (req) => {
    const tenantId = tenantOf(req);
    return engine.getAccount(tenantId, customerId((req.params as { id: string }).id));
  });

  app.post('/v1/transfers', {
    schema: moneySchema(moneyBody({ sourceAccountId: idString, destinationAccountId: idString }, ['sourceAccountId', 'destinationAccountId'])),
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true)!;
    const body = req.body as { sourceAccountId: string; destinationAccountId: string; amount: string; currency: string; metadata?: Record<string, unknown> };
    const { amount, currency } = parseMoney(body);
    const src = customerId(body.sourceAccountId);
    const dst = customerId(body.destinationAccountId);
    const hash = requestHash('POST /v1/transfers', {}, body);
    return send(reply, await engine.move({
      kind: 'transfer', tenantId, key, hash, accounts: [src, dst], amount, currency, metadata: body.metadata ?? null,
    }));
  });

  for (const kind of ['deposit', 'withdrawal'] as const) {
    app.post(`/v1/${kind}s`, { schema: moneySchema(moneyBody({ accountId: idString }, ['accountId'])) }, async (req, reply) => {
      const tenantId = tenantOf(req);
      const key = idempotencyKey(req, true)!;
      const body = req.body as { accountId: string; amount: string; currency: string; metadata?: Record<string, unknown> };
      const { amount, currency } = parseMoney(body);
      const account = customerId(body.accountId);
      const hash = requestHash(`POST /v1/${kind}s`, {}, body);
      return send(reply, await engine.move({
        kind, tenantId, key, hash, accounts: [account], amount, currency, metadata: body.metadata ?? null,
      }));
    });
  }

  app.get('/v1/transfers/:id', {
    schema: { tags: ['money'], params: idParams, response: { 200: { $ref: 'Transfer#' }, ...errorResponses } },
  }, async (req) => {
    const tenantId = tenantOf(req);
    const id = parseTransferId((req.params as { id: string }).id);
    if (!id) throw new GeopayError('transfer_not_found');
    return engine.getTransfer(tenantId, id);
  });
}
