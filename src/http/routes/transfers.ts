// Money movement: deposits, withdrawals and transfers are one saga. The source actor commits
// the debit with the transfer record and the idempotency key; the destination applies the
// credit exactly once; the request waits (bounded) for the credit: 201 settled, 202 in flight.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { AccountId, Region, TransferId } from '../../domain/ids.ts';
import { externalAccountId, makeTransferId, parseTransferId, uuidv7Hex } from '../../domain/ids.ts';
import type { Currency } from '../../domain/money.ts';
import { parseAmount, parseCurrency } from '../../domain/money.ts';
import { GeopayError } from '../../domain/errors.ts';
import { transferStatus } from '../../domain/views.ts';
import type { TransferView } from '../../domain/views.ts';
import { getTransfer } from '../../persistence/queries.ts';
import type { Ctx } from '../app.ts';
import { idempotencyKey, tenantOf } from '../app.ts';
import type { HttpAnswer } from '../idempotency.ts';
import { requestHash } from '../idempotency.ts';
import { answer, send, stored } from '../answer.ts';
import { ownedAccount } from './accounts.ts';
import { amountString, currencyCode, errorResponses, idParams, idempotencyHeader, idString, metadata } from '../schemas.ts';

type Kind = 'transfer' | 'deposit' | 'withdrawal';

async function transferAnswer(ctx: Ctx, id: string, tenantId: string): Promise<HttpAnswer> {
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
    return ctx.keys.run(tenantId, key, hash, async () => {
      const now = Date.now();
      const transferId = makeTransferId(uuidv7Hex(now, randomBytes(10))) as TransferId;
      const at = new Date(now).toISOString();
      // Wait for the credit from before the debit is sent: it can land before we look.
      const settled = ctx.registry.waitForTransfer(transferId, ctx.config.askTimeoutMs + ctx.config.transferWaitMs);
      const r = await ctx.registry.send(src, {
        cmd: { type: 'Debit', transferId, amount, currency },
        idem: { tenantId, key, requestHash: hash, resourceId: transferId, respond: stored(null) },
        transfer: { destinationId: dst, kind, tenantId: tenantId as never, metadata: md },
      }, { at });
      if (r.type !== 'done' || !r.reply.ok) settled.cancel();
      return answer(r, hash, async () => {
        let timer: NodeJS.Timeout | undefined;
        const outcome = await Promise.race([settled.outcome, new Promise<undefined>((res) => { timer = setTimeout(() => res(undefined), ctx.config.transferWaitMs); })]);
        clearTimeout(timer);
        settled.cancel();
        // A return carries the refusal code, which only the row has: read it (rare).
        if (outcome?.state === 'returned') return transferAnswer(ctx, transferId, tenantId);
        // Otherwise the answer is what was committed, built here exactly as the row reads back.
        const view: TransferView = {
          id: transferId, kind, sourceAccountId: src, destinationAccountId: dst, amount: amount.toString(), currency,
          state: outcome?.state ?? 'debited', refusalCode: null, metadata: md, createdAt: at, updatedAt: outcome?.at ?? at,
        };
        return { status: transferStatus(view.state), body: view };
      }, async (s) => transferAnswer(ctx, s.resourceId!, tenantId));
    });
  }

  const moneyBody = (fields: Record<string, unknown>, required: string[]) => ({
    type: 'object', additionalProperties: false, required: [...required, 'amount', 'currency'],
    properties: { ...fields, amount: amountString, currency: currencyCode, metadata },
  });
  const moneySchema = (body: object) => ({
    tags: ['money'], headers: idempotencyHeader, body,
    response: { 201: { $ref: 'Transfer#' }, 202: { $ref: 'Transfer#' }, ...errorResponses },
  });

  function parseMoney(body: { amount: string; currency: string }): { amount: bigint; currency: Currency } {
    const amount = parseAmount(body.amount);
    if (!amount.ok) throw new GeopayError('invalid_amount');
    const currency = parseCurrency(body.currency);
    if (!currency.ok) throw new GeopayError('unknown_currency');
    return { amount: amount.value, currency: currency.value };
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

  app.get('/v1/transfers/:id', {
    schema: { tags: ['money'], params: idParams, response: { 200: { $ref: 'Transfer#' }, ...errorResponses } },
  }, async (req) => {
    const tenantId = tenantOf(req);
    const id = parseTransferId((req.params as { id: string }).id);
    if (!id) throw new GeopayError('transfer_not_found');
    return (await transferAnswer(ctx, id, tenantId)).body;
  });
}
