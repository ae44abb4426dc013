// Money movement: deposits, withdrawals and transfers are one saga. The source actor commits
// the debit with the transfer record and the idempotency key; the destination applies the
// credit exactly once; the request waits (bounded) for the credit: 201 settled, 202 in flight.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { AccountId, Region, TenantId, TransferId } from '../../domain/ids.ts';
import type { AccountCommand, TransferKind } from '../../domain/account.ts';
import type { TransferOutcome } from '../../actors/registry.ts';
import { externalAccountId, makeTransferId, parseTransferId, uuidv7Hex } from '../../domain/ids.ts';
import type { Currency } from '../../domain/money.ts';
import { parseAmount } from '../../domain/money.ts';
import { GeopayError } from '../../domain/errors.ts';
import { transferStatus } from '../../domain/views.ts';
import type { TransferView } from '../../domain/views.ts';
import { getTransfer } from '../../persistence/queries.ts';
import type { Ctx } from '../app.ts';
import { idempotencyKey, tenantOf } from '../app.ts';
import type { HttpAnswer } from '../idempotency.ts';
import { requestHash } from '../idempotency.ts';
import { answer, send } from '../answer.ts';
import { ownedAccount } from './accounts.ts';
import { moneyBody, moneySchema, parseMoney } from '../requests.ts';
import { amountString, errorResponses, idParams, idempotencyHeader, idString, metadata } from '../schemas.ts';

type Kind = 'transfer' | 'deposit' | 'withdrawal';

export interface MoveSpec {
  kind: TransferKind;
  tenantId: string;
  key: string;
  hash: string;
  src: AccountId;
  dst: AccountId;
  currency: Currency;
  metadata: Record<string, unknown> | null;
  /** Known up front, or undefined when the source decides it (a capture of all that is left). */
  amount: bigint | undefined;
  /** The source actor's command that creates this transfer. */
  command: (transferId: TransferId) => AccountCommand;
  holdId?: string;
  refundOf?: string;
}

/**
 * Every movement of money is a transfer created by its source actor: it commits the debit,
 * the transfer record and the idempotency key together; then the request waits (bounded)
 * for the credit: 201 settled, 202 still in flight.
 */
export async function moveMoney(ctx: Ctx, m: MoveSpec): Promise<HttpAnswer> {
  return ctx.keys.run(m.tenantId, m.key, m.hash, async () => {
    const now = ctx.clock();
    const transferId = makeTransferId(uuidv7Hex(now, randomBytes(10))) as TransferId;
    const at = new Date(now).toISOString();
    // Wait for the credit from before the debit is sent: it can land before we look.
    const settled = ctx.registry.waitForTransfer(transferId, ctx.config.askTimeoutMs + ctx.config.transferWaitMs);
    const r = await ctx.registry.send(m.src, {
      cmd: m.command(transferId),
      idem: { tenantId: m.tenantId, key: m.key, requestHash: m.hash, resourceId: transferId, onOk: null },
      transfer: { destinationId: m.dst, kind: m.kind, tenantId: m.tenantId as TenantId, metadata: m.metadata },
    }, { at });
    if (r.type !== 'done' || !r.reply.ok) settled.cancel();
    return answer(r, m.hash, async () => {
      let timer: NodeJS.Timeout | undefined;
      let polling = true;
      const waits: Promise<TransferOutcome | undefined>[] = [settled.outcome, new Promise<undefined>((res) => { timer = setTimeout(() => res(undefined), ctx.config.transferWaitMs); })];
      // A leg committed on another node wakes no waiter here: read the row instead.
      if (!ctx.registry.isLocal(m.src) || !ctx.registry.isLocal(m.dst)) waits.push(pollSettled(ctx, transferId, () => polling));
      const outcome = await Promise.race(waits);
      polling = false;
      clearTimeout(timer);
      settled.cancel();
      // A return carries the refusal code, and a capture of all that is left its amount,
      // which only the row has: read it (rare).
      if (outcome?.state === 'returned' || m.amount === undefined) return transferAnswer(ctx, transferId, m.tenantId);
      // Otherwise the answer is what was committed, built here exactly as the row reads back.
      const view: TransferView = {
        id: transferId, kind: m.kind, sourceAccountId: m.src, destinationAccountId: m.dst, amount: m.amount.toString(), currency: m.currency,
        state: outcome?.state ?? 'debited', refusalCode: null, metadata: m.metadata, holdId: m.holdId ?? null, refundOf: m.refundOf ?? null,
        refunded: '0', createdAt: at, updatedAt: outcome?.at ?? at,
      };
      return { status: transferStatus(view.state), body: view };
    }, async (s) => transferAnswer(ctx, s.resourceId!, m.tenantId));
  });
}

/** Resolves when the transfer's row leaves flight, while `go()` holds. */
async function pollSettled(ctx: Ctx, id: TransferId, go: () => boolean): Promise<TransferOutcome | undefined> {
  while (go()) {
    await new Promise((r) => setTimeout(r, 25));
    if (!go()) return undefined;
    const t = await getTransfer(ctx.pool, id);
    if (t && (t.state === 'settled' || t.state === 'returned')) return { id, state: t.state, at: t.updatedAt };
  }
  return undefined;
}

export async function transferAnswer(ctx: Ctx, id: string, tenantId: string): Promise<HttpAnswer> {
  const t = await getTransfer(ctx.pool, id);
  if (!t || t.tenantId !== tenantId) throw new GeopayError('transfer_not_found');
  const { tenantId: _t, ...view } = t;
  return { status: transferStatus(t.state), body: view };
}

export function transferRoutes(app: FastifyInstance, ctx: Ctx): void {
  const ensured = new Set<string>();

  /** The external account of a region and currency exists before money moves through it. */
  async function ensureExternal(region: Region, currency: Currency): Promise<AccountId> {
    const id = externalAccountId(region, currency);
    if (ensured.has(id)) return id;
    const r = await ctx.registry.send(id, {
      cmd: { type: 'Open', id, kind: 'external', tenantId: null, currency, region, overdraftLimit: 0n, metadata: {}, at: new Date().toISOString() },
    });
    if (r.type === 'error') throw r.error;
    if (r.type === 'done' && !r.reply.ok && r.reply.code !== 'account_exists') throw new GeopayError('internal_error', `external account: ${r.reply.code}`);
    ensured.add(id);
    return id;
  }

  async function move(kind: Kind, tenantId: string, key: string, hash: string, src: AccountId, dst: AccountId, amount: bigint, currency: Currency, md: Record<string, unknown> | null): Promise<HttpAnswer> {
    return moveMoney(ctx, { kind, tenantId, key, hash, src, dst, currency, metadata: md, amount, command: (transferId) => ({ type: 'Debit', transferId, amount, currency }) });
  }

  app.post('/v1/transfers', {
    schema: moneySchema(moneyBody({ sourceAccountId: idString, destinationAccountId: idString }, ['sourceAccountId', 'destinationAccountId'])),
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true)!;
    const body = req.body as { sourceAccountId: string; destinationAccountId: string; amount: string; currency: string; metadata?: Record<string, unknown> };
    const { amount, currency } = parseMoney(body);
    const src = await ownedAccount(ctx, tenantId, body.sourceAccountId);
    const dst = await ownedAccount(ctx, tenantId, body.destinationAccountId);
    if (src.id === dst.id) throw new GeopayError('same_account');
    if (src.currency !== currency || dst.currency !== currency) throw new GeopayError('currency_mismatch');
    const hash = requestHash('POST /v1/transfers', {}, body);
    return send(reply, await move('transfer', tenantId, key, hash, src.id, dst.id, amount, currency, body.metadata ?? null));
  });

  for (const kind of ['deposit', 'withdrawal'] as const) {
    app.post(`/v1/${kind}s`, { schema: moneySchema(moneyBody({ accountId: idString }, ['accountId'])) }, async (req, reply) => {
      const tenantId = tenantOf(req);
      const key = idempotencyKey(req, true)!;
      const body = req.body as { accountId: string; amount: string; currency: string; metadata?: Record<string, unknown> };
      const { amount, currency } = parseMoney(body);
      const acc = await ownedAccount(ctx, tenantId, body.accountId);
      if (acc.currency !== currency) throw new GeopayError('currency_mismatch');
      const ext = await ensureExternal(acc.region as Region, currency);
      const hash = requestHash(`POST /v1/${kind}s`, {}, body);
      const [src, dst] = kind === 'deposit' ? [ext, acc.id] : [acc.id, ext];
      return send(reply, await move(kind, tenantId, key, hash, src, dst, amount, currency, body.metadata ?? null));
    });
  }

  app.post('/v1/transfers/:id/refunds', {
    schema: {
      tags: ['money'], params: idParams, headers: idempotencyHeader,
      body: { type: 'object', additionalProperties: false, properties: { amount: amountString, metadata } },
      response: { 201: { $ref: 'Transfer#' }, 202: { $ref: 'Transfer#' }, ...errorResponses },
    },
  }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true)!;
    const originalId = parseTransferId((req.params as { id: string }).id);
    if (!originalId) throw new GeopayError('transfer_not_found');
    const body = (req.body ?? {}) as { amount?: string; metadata?: Record<string, unknown> };
    const orig = await getTransfer(ctx.pool, originalId);
    if (!orig || orig.tenantId !== tenantId) throw new GeopayError('transfer_not_found');
    if (orig.state !== 'settled' || orig.kind === 'refund') throw new GeopayError('transfer_not_refundable');
    const left = BigInt(orig.amount) - BigInt(orig.refunded);
    let amount = left;
    if (body.amount !== undefined) {
      const a = parseAmount(body.amount);
      if (!a.ok) throw new GeopayError('invalid_amount');
      amount = a.value;
    }
    if (amount <= 0n) throw new GeopayError('refund_exceeds_transfer');
    const currency = orig.currency as Currency;
    const hash = requestHash('POST /v1/transfers/:id/refunds', { originalId }, body);
    // The refund's source is the original destination: its actor is the one writer of what
    // is left to refund, so concurrent refunds can never add up to more than the amount.
    return send(reply, await moveMoney(ctx, {
      kind: 'refund', tenantId, key, hash, src: orig.destinationAccountId as AccountId, dst: orig.sourceAccountId as AccountId,
      currency, metadata: body.metadata ?? null, amount, refundOf: originalId,
      command: (transferId) => ({ type: 'Refund', transferId, originalId, amount, currency, refundable: left }),
    }));
  });

  app.get('/v1/transfers/:id', {
    schema: { tags: ['money'], params: idParams, response: { 200: { $ref: 'Transfer#' }, ...errorResponses } },
  }, async (req) => {
    const tenantId = tenantOf(req);
    const id = parseTransferId((req.params as { id: string }).id);
    if (!id) throw new GeopayError('transfer_not_found');
    return (await transferAnswer(ctx, id, tenantId)).body;
  });
}
