// Holds (two-phase payments): authorize reserves an amount on the source; capture sends all
// or part of it through the same saga as a transfer; void releases it; at its deadline it is
// released by the node's sweeper and can no longer be captured, even after a restart.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { HoldId, TenantId } from '../../domain/ids.ts';
import { makeHoldId, parseHoldId, uuidv7Hex } from '../../domain/ids.ts';
import type { Currency } from '../../domain/money.ts';
import { parseAmount, parseCurrency } from '../../domain/money.ts';
import { GeopayError } from '../../domain/errors.ts';
import type { HoldView } from '../../domain/views.ts';
import { getHold } from '../../persistence/queries.ts';
import type { Ctx } from '../app.ts';
import { idempotencyKey, tenantOf } from '../app.ts';
import type { HttpAnswer } from '../idempotency.ts';
import { requestHash } from '../idempotency.ts';
import { answer, send } from '../answer.ts';
import { ownedAccount } from './accounts.ts';
import { moveMoney } from './transfers.ts';
import { amountString, currencyCode, errorResponses, idParams, idempotencyHeader, idString, metadata } from '../schemas.ts';

async function holdOf(ctx: Ctx, tenantId: string, raw: string): Promise<HoldView & { tenantId: string | null }> {
  const id = parseHoldId(raw);
  const h = id ? await getHold(ctx.pool, id) : undefined;
  if (!h || h.tenantId !== tenantId) throw new GeopayError('hold_not_found');
  return h;
}

const view = ({ tenantId: _t, ...h }: HoldView & { tenantId: string | null }): HoldView => h;

export function holdRoutes(app: FastifyInstance, ctx: Ctx): void {
  app.post('/v1/holds', {
    schema: {
      tags: ['holds'], headers: idempotencyHeader,
      body: {
        type: 'object', additionalProperties: false, required: ['sourceAccountId', 'destinationAccountId', 'amount', 'currency'],
        properties: {
          sourceAccountId: idString, destinationAccountId: idString, amount: amountString, currency: currencyCode, metadata,
          expiresInSeconds: { type: 'integer', minimum: 1 }, multiCapture: { type: 'boolean' },
        },
      },
      response: { 201: { $ref: 'Hold#' }, ...errorResponses },
    },
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true)!;
    const body = req.body as { sourceAccountId: string; destinationAccountId: string; amount: string; currency: string; metadata?: Record<string, unknown>; expiresInSeconds?: number; multiCapture?: boolean };
    const amount = parseAmount(body.amount);
    if (!amount.ok) throw new GeopayError('invalid_amount');
    const currency = parseCurrency(body.currency);
    if (!currency.ok) throw new GeopayError('unknown_currency');
    const ttlMs = body.expiresInSeconds === undefined ? ctx.config.holdDefaultTtlMs : body.expiresInSeconds * 1000;
    if (ttlMs > ctx.config.holdMaxTtlMs) throw new GeopayError('invalid_expiry');
    const src = await ownedAccount(ctx, tenantId, body.sourceAccountId);
    const dst = await ownedAccount(ctx, tenantId, body.destinationAccountId);
    if (src.id === dst.id) throw new GeopayError('same_account');
    if (src.currency !== currency.value || dst.currency !== currency.value) throw new GeopayError('currency_mismatch');
    const hash = requestHash('POST /v1/holds', {}, body);
    const a = await ctx.keys.run(tenantId, key, hash, async () => {
      const now = ctx.clock();
      const holdId = makeHoldId(uuidv7Hex(now, randomBytes(10)));
      const at = new Date(now).toISOString();
      const expiresAt = new Date(now + ttlMs).toISOString();
      const md = body.metadata ?? null;
      const multiCapture = body.multiCapture ?? false;
      const built = (): HttpAnswer => ({
        status: 201,
        body: {
          id: holdId, sourceAccountId: src.id, destinationAccountId: dst.id, amount: amount.value.toString(), captured: '0',
          remaining: amount.value.toString(), currency: currency.value, multiCapture, state: 'held', expiresAt, metadata: md,
          createdAt: at, updatedAt: at,
        } satisfies HoldView,
      });
      const r = await ctx.registry.send(src.id, {
        cmd: { type: 'Authorize', holdId, destinationId: dst.id, amount: amount.value, currency: currency.value, multiCapture, expiresAt },
        idem: { tenantId, key, requestHash: hash, resourceId: holdId, onOk: built() },
        hold: { tenantId: tenantId as TenantId, metadata: md },
      }, { at });
      return answer(r, hash, built, async () => { throw new GeopayError('idempotency_key_in_progress'); });
    });
    return send(reply, a);
  });

  app.get('/v1/holds/:id', {
    schema: { tags: ['holds'], params: idParams, response: { 200: { $ref: 'Hold#' }, ...errorResponses } },
  }, async (req) => view(await holdOf(ctx, tenantOf(req), (req.params as { id: string }).id)));

  app.post('/v1/holds/:id/capture', {
    schema: {
      tags: ['holds'], params: idParams, headers: idempotencyHeader,
      body: { type: 'object', additionalProperties: false, properties: { amount: amountString, metadata } },
      response: { 201: { $ref: 'Transfer#' }, 202: { $ref: 'Transfer#' }, ...errorResponses },
    },
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true)!;
    const hold = await holdOf(ctx, tenantId, (req.params as { id: string }).id);
    const body = (req.body ?? {}) as { amount?: string; metadata?: Record<string, unknown> };
    let amount: bigint | undefined;
    if (body.amount !== undefined) {
      const a = parseAmount(body.amount);
      if (!a.ok) throw new GeopayError('invalid_amount');
      amount = a.value;
    }
    const holdId = hold.id as HoldId;
    const hash = requestHash('POST /v1/holds/:id/capture', { holdId }, body);
    // The capture is a transfer from the hold's source; its actor decides against the hold
    // in memory, so concurrent captures of one hold are serialised there.
    return send(reply, await moveMoney(ctx, {
      kind: 'capture', tenantId, key, hash, src: hold.sourceAccountId as never, dst: hold.destinationAccountId as never,
      currency: hold.currency as Currency, metadata: body.metadata ?? null, amount, holdId,
      command: (transferId) => ({ type: 'Capture', holdId, transferId, amount, at: new Date(ctx.clock()).toISOString() }),
    }));
  });

  app.post('/v1/holds/:id/void', {
    schema: { tags: ['holds'], params: idParams, headers: idempotencyHeader, response: { 200: { $ref: 'Hold#' }, ...errorResponses } },
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, false);
    const hold = await holdOf(ctx, tenantId, (req.params as { id: string }).id);
    const holdId = hold.id as HoldId;
    const hash = requestHash('POST /v1/holds/:id/void', { holdId }, null);
    const exec = async (): Promise<HttpAnswer> => {
      const r = await ctx.registry.send(hold.sourceAccountId as never, {
        cmd: { type: 'Void', holdId },
        ...(key ? { idem: { tenantId, key, requestHash: hash, resourceId: holdId, onOk: null } } : {}),
      });
      const readBack = async (): Promise<HttpAnswer> => ({ status: 200, body: view(await holdOf(ctx, tenantId, holdId)) });
      return answer(r, hash, readBack, readBack);
    };
    return send(reply, key ? await ctx.keys.run(tenantId, key, hash, exec) : await exec());
  });
}
