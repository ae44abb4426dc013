// Batch transfers: up to BATCH_MAX_ITEMS items under one Idempotency-Key, a result per item.
// Independent items are ordinary transfers sent all at once, so the items of one source meet
// in its mailbox and commit together. A `linked` group succeeds or fails as a whole, across
// actors, without a distributed transaction: every item first holds its amount, one row
// decides the group (commit or abort), then the holds are captured or voided. Design and
// failure cases: docs/batch.md.
import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { AccountId, HoldId, TenantId } from '../../domain/ids.ts';
import type { Currency } from '../../domain/money.ts';
import { parseAmount, parseCurrency } from '../../domain/money.ts';
import type { ErrorCode } from '../../domain/errors.ts';
import { ERRORS, GeopayError } from '../../domain/errors.ts';
import { problem, transferStatus } from '../../domain/views.ts';
import { captureOfHold, decideGroup } from '../../persistence/queries.ts';
import type { Ctx } from '../app.ts';
import { idempotencyKey, tenantOf } from '../app.ts';
import type { HttpAnswer } from '../idempotency.ts';
import { requestHash } from '../idempotency.ts';
import { ownedAccount } from './accounts.ts';
import { moveMoney } from './transfers.ts';
import { amountString, currencyCode, errorResponses, idempotencyHeader, idString, metadata } from '../schemas.ts';

interface ItemBody { sourceAccountId: string; destinationAccountId: string; amount: string; currency: string; metadata?: Record<string, unknown>; linked?: string }
interface Item { index: number; src: AccountId; dst: AccountId; amount: bigint; currency: Currency; metadata: Record<string, unknown> | null; hash: string }
interface ItemResult { index: number; status: number; transfer?: unknown; error?: unknown }

// Derived keys live in a namespace a client key cannot reach: a client key is printable ASCII.
const SEP = '\u001f';
const digest = (...parts: string[]): string => createHash('sha256').update(parts.join(SEP)).digest('hex').slice(0, 32);

const failed = (index: number, code: ErrorCode): ItemResult => ({ index, status: ERRORS[code].status, error: problem(code) });
const fromAnswer = (index: number, a: HttpAnswer): ItemResult =>
  a.status >= 400 ? { index, status: a.status, error: a.body } : { index, status: a.status, transfer: a.body };
const fromError = (index: number, err: unknown): ItemResult =>
  failed(index, err instanceof GeopayError ? err.code : 'internal_error');

export function batchRoutes(app: FastifyInstance, ctx: Ctx): void {
  const maxItems = ctx.config.batchMaxItems;

  async function validate(tenantId: string, index: number, b: ItemBody): Promise<Item | ItemResult> {
    try {
      const amount = parseAmount(b.amount);
      if (!amount.ok) return failed(index, 'invalid_amount');
      const currency = parseCurrency(b.currency);
      if (!currency.ok) return failed(index, 'unknown_currency');
      const src = await ownedAccount(ctx, tenantId, b.sourceAccountId);
      const dst = await ownedAccount(ctx, tenantId, b.destinationAccountId);
      if (src.id === dst.id) return failed(index, 'same_account');
      if (src.currency !== currency.value || dst.currency !== currency.value) return failed(index, 'currency_mismatch');
      const { linked: _l, ...rest } = b;
      return { index, src: src.id, dst: dst.id, amount: amount.value, currency: currency.value, metadata: b.metadata ?? null, hash: requestHash('batch item', {}, rest) };
    } catch (err) {
      return fromError(index, err);
    }
  }

  async function independent(tenantId: string, key: string, it: Item): Promise<ItemResult> {
    try {
      return fromAnswer(it.index, await moveMoney(ctx, {
        kind: 'transfer', tenantId, key: `${key}${SEP}${it.index}`, hash: it.hash, src: it.src, dst: it.dst, currency: it.currency,
        metadata: it.metadata, amount: it.amount, command: (transferId) => ({ type: 'Debit', transferId, amount: it.amount, currency: it.currency }),
      }));
    } catch (err) {
      return fromError(it.index, err);
    }
  }

  async function linkedGroup(tenantId: string, key: string, name: string, items: Item[]): Promise<ItemResult[]> {
    const groupId = `grp_${digest(tenantId, key, name)}`;
    const holdIdOf = (it: Item) => `hold_${digest(tenantId, key, 'hold', String(it.index))}` as HoldId;
    const expiresAt = new Date(ctx.clock() + ctx.config.linkedHoldTtlMs).toISOString();
    // Phase 1: reserve every item's amount on its source.
    const placed = await Promise.all(items.map(async (it): Promise<ErrorCode | undefined> => {
      const r = await ctx.registry.send(it.src, {
        cmd: { type: 'Authorize', holdId: holdIdOf(it), destinationId: it.dst, amount: it.amount, currency: it.currency, multiCapture: false, expiresAt },
        idem: { tenantId, key: `${key}${SEP}hold${SEP}${it.index}`, requestHash: it.hash, resourceId: holdIdOf(it), onOk: { status: 201, body: null } },
        hold: { tenantId: tenantId as TenantId, metadata: it.metadata, groupId },
      });
      if (r.type === 'error') return r.error.code;
      if (r.type === 'duplicate') return r.stored.statusCode === 201 ? undefined : ((r.stored.response as { code?: ErrorCode } | null)?.code ?? 'internal_error');
      return r.reply.ok ? undefined : r.reply.code;
    }));
    const firstFailure = placed.find((c) => c !== undefined);
    // Phase 2: one row decides. The expiry sweeper competes for the same row, so a group is
    // never half captured and half released.
    const decision = firstFailure === undefined ? await decideGroup(ctx.pool, groupId, 'commit') : await decideGroup(ctx.pool, groupId, 'abort');
    if (decision === 'abort') {
      await Promise.all(items.map((it, i) => (placed[i] === undefined
        ? ctx.registry.send(it.src, { cmd: { type: 'Void', holdId: holdIdOf(it) } })
        : undefined)));
      return items.map((it, i) => failed(it.index, placed[i] ?? 'linked_group_failed'));
    }
    return Promise.all(items.map(async (it) => {
      try {
        const a = await moveMoney(ctx, {
          kind: 'capture', tenantId, key: `${key}${SEP}capture${SEP}${it.index}`, hash: it.hash, src: it.src, dst: it.dst, currency: it.currency,
          metadata: it.metadata, amount: it.amount, holdId: holdIdOf(it),
          command: (transferId) => ({ type: 'Capture', holdId: holdIdOf(it), transferId, amount: it.amount, at: new Date(ctx.clock()).toISOString(), decided: true }),
        });
        if (a.status === ERRORS.hold_not_active.status) {
          // Captured already (by the sweeper completing this decided group): answer that.
          const t = await captureOfHold(ctx.pool, holdIdOf(it));
          if (t) {
            const { tenantId: _t, ...view } = t;
            return { index: it.index, status: transferStatus(t.state), transfer: view };
          }
        }
        return fromAnswer(it.index, a);
      } catch (err) {
        return fromError(it.index, err);
      }
    }));
  }

  app.post('/v1/transfers/batch', {
    bodyLimit: Math.max(ctx.config.bodyLimitBytes, maxItems * 1_024),
    schema: {
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
        ...errorResponses,
      },
    },
  }, async (req) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true)!;
    const body = req.body as { items: ItemBody[] };
    const hash = requestHash('POST /v1/transfers/batch', {}, body);
    const a = await ctx.keys.run(tenantId, key, hash, async () => {
      // The batch's own key: a different body under it is refused before anything moves.
      const claim = await ctx.pool.query<{ request_hash: string }>(
        `WITH ins AS (INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING request_hash)
         SELECT request_hash FROM ins UNION ALL SELECT request_hash FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 LIMIT 1`,
        [tenantId, key, hash]);
      if (claim.rows[0] && claim.rows[0].request_hash !== hash) throw new GeopayError('idempotency_key_reused');
      const checked = await Promise.all(body.items.map((b, i) => validate(tenantId, i, b)));
      const results: ItemResult[] = new Array(body.items.length);
      const groups = new Map<string, number[]>();
      const loose: Item[] = [];
      body.items.forEach((b, i) => {
        if (b.linked !== undefined) {
          const g = groups.get(b.linked) ?? [];
          g.push(i);
          groups.set(b.linked, g);
        } else if ('src' in checked[i]!) loose.push(checked[i] as Item);
        else results[i] = checked[i] as ItemResult;
      });
      const work: Promise<void>[] = loose.map(async (it) => { results[it.index] = await independent(tenantId, key, it); });
      for (const [name, idx] of groups) {
        const bad = idx.filter((i) => !('src' in checked[i]!));
        if (bad.length > 0) {
          // An invalid item fails its group before anything is held.
          for (const i of idx) results[i] = bad.includes(i) ? (checked[i] as ItemResult) : failed(i, 'linked_group_failed');
          continue;
        }
        work.push(linkedGroup(tenantId, key, name, idx.map((i) => checked[i] as Item)).then((rs) => { for (const r of rs) results[r.index] = r; }));
      }
      await Promise.all(work);
      return { status: 200, body: { items: results } };
    });
    return a.body;
  });
}
