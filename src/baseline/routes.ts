// HTTP routes of the row-locking baseline (ENGINE=baseline): geopay's paths, headers, schemas,
// request hashes, answers and error codes for opening and reading accounts and moving money,
// served by src/baseline/engine.ts. A route plugin for the composition root (src/node.ts); the
// schemas and parsing are geopay's own (src/http/requests.ts).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Pool } from '../persistence/db.ts';
import type { AccountId } from '../domain/ids.ts';
import { parseAccountId, isExternal, parseTransferId } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import { requestHash } from '../payments/index.ts';
import type { Ctx, RoutePlugin } from '../http/context.ts';
import { idempotencyKey, tenantOf } from '../http/context.ts';
import { send, toAnswer, transferAnswer } from '../http/answer.ts';
import { rejectionAnswer } from '../http/errors.ts';
import type { OpenAccountBody } from '../http/requests.ts';
import { moneyBody, moneySchema, openAccountSchema, parseMoney, parseOpenAccount } from '../http/requests.ts';
import { idParams, idString } from '../http/schemas.ts';
import { BaselineEngine } from './engine.ts';

/** Attempts of one request's transaction when PostgreSQL aborts it for a deadlock or serialization failure. */
const MAX_ATTEMPTS = 5;

type Metadata = Record<string, unknown>;

/** A customer account id, or 404 as for any account the tenant cannot see. */
function customerId(raw: string): AccountId {
  const id = parseAccountId(raw);
  if (!id || isExternal(id)) throw new GeopayError('account_not_found');
  return id;
}

/** Who asks, under which Idempotency-Key, and the hash its replays are checked against. */
function keyed(req: FastifyRequest, route: string): { tenantId: string; key: string; hash: string } {
  return { tenantId: tenantOf(req), key: idempotencyKey(req, true), hash: requestHash(route, {}, req.body) };
}

/** The baseline's routes on `pool`: the engine is built here, one per app, and stops with it. */
export function baselineRoutes(pool: Pool, clock: () => number): RoutePlugin {
  return (app, ctx) => {
    const engine = new BaselineEngine(pool, { maxAttempts: MAX_ATTEMPTS, clock, rejectionAnswer });
    const stopExpiry = engine.expireKeys({ retentionMs: ctx.config.idempotencyRetentionMs, everyMs: ctx.config.idempotencyCleanupMs }, ctx.logger);
    app.addHook('onClose', async () => {
      stopExpiry();
      if (engine.conflictRetries > 0) ctx.logger.info({ retries: engine.conflictRetries }, 'baseline transactions retried after lock conflicts');
    });
    accountRoutes(app, ctx, engine);
    moneyRoutes(app, engine);
  };
}

function accountRoutes(app: FastifyInstance, ctx: Ctx, engine: BaselineEngine): void {
  app.post('/v1/accounts', { schema: openAccountSchema }, async (req, reply) => {
    const { tenantId, key, hash } = keyed(req, 'POST /v1/accounts');
    const body = req.body as OpenAccountBody;
    const { currency, overdraftLimit, region } = parseOpenAccount(body, ctx.config.region);
    return send(reply, toAnswer(await engine.openAccount({ tenantId, key, hash, currency, region, overdraftLimit, metadata: body.metadata ?? {} }), 201));
  });

  app.get('/v1/accounts/:id', {
    schema: { tags: ['accounts'], params: idParams, response: { 200: { $ref: 'Account#' } } },
  }, async (req) => engine.getAccount(tenantOf(req), customerId((req.params as { id: string }).id)));
}

function moneyRoutes(app: FastifyInstance, engine: BaselineEngine): void {
  app.post('/v1/transfers', {
    schema: moneySchema(moneyBody({ sourceAccountId: idString, destinationAccountId: idString }, ['sourceAccountId', 'destinationAccountId'])),
  }, async (req, reply) => {
    const request = keyed(req, 'POST /v1/transfers');
    const body = req.body as { sourceAccountId: string; destinationAccountId: string; amount: string; currency: string; metadata?: Metadata };
    const { amount, currency } = parseMoney(body);
    const accounts = [customerId(body.sourceAccountId), customerId(body.destinationAccountId)] as const;
    return send(reply, transferAnswer(await engine.move({ kind: 'transfer', ...request, accounts, amount, currency, metadata: body.metadata ?? null })));
  });

  for (const kind of ['deposit', 'withdrawal'] as const) {
    app.post(`/v1/${kind}s`, { schema: moneySchema(moneyBody({ accountId: idString }, ['accountId'])) }, async (req, reply) => {
      const request = keyed(req, `POST /v1/${kind}s`);
      const body = req.body as { accountId: string; amount: string; currency: string; metadata?: Metadata };
      const { amount, currency } = parseMoney(body);
      const accounts = [customerId(body.accountId)] as const;
      return send(reply, transferAnswer(await engine.move({ kind, ...request, accounts, amount, currency, metadata: body.metadata ?? null })));
    });
  }

  app.get('/v1/transfers/:id', {
    schema: { tags: ['money'], params: idParams, response: { 200: { $ref: 'Transfer#' } } },
  }, async (req) => {
    const tenantId = tenantOf(req);
    const id = parseTransferId((req.params as { id: string }).id);
    if (!id) throw new GeopayError('transfer_not_found');
    return engine.getTransfer(tenantId, id);
  });
}
