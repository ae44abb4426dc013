// Batch transfers: up to BATCH_MAX_ITEMS items under one Idempotency-Key, an outcome per item.
// Independent items are ordinary transfers sent all at once, so the items of one source meet
// in its mailbox and commit together. A `linked` group succeeds or fails as a whole, across
// actors, without a distributed transaction: every item first holds its amount, one row
// decides the group (commit or abort), then the holds are captured or voided. Design and
// failure cases: docs/batch.md.
import type { TraceContext } from '../observability/trace.ts';
import { createHash } from 'node:crypto';
import type { AccountId, HoldId, TenantId } from '../domain/ids.ts';
import { makeHoldId, regionOf } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { parseAmount, parseCurrency } from '../domain/money.ts';
import type { ErrorCode } from '../domain/errors.ts';
import { GeopayError } from '../domain/errors.ts';
import type { TransferView } from '../domain/views.ts';
import type { PaymentsContext } from './context.ts';
import type { Outcome } from './outcome.ts';
import { STORED_CREATED, failed, ok } from './outcome.ts';
import { requestHash } from './request-hash.ts';
import type { Transfers } from './transfers.ts';

export interface BatchItem { sourceAccountId: string; destinationAccountId: string; amount: string; currency: string; metadata?: Record<string, unknown>; linked?: string }
interface Item { index: number; src: AccountId; dst: AccountId; amount: bigint; currency: Currency; metadata: Record<string, unknown> | null; hash: string }
interface Invalid { index: number; outcome: Outcome<TransferView> }

/** A batch's answer: an outcome per item, and whether it answers a repeat of the batch. */
export interface BatchOutcome { type: 'batch'; items: Outcome<TransferView>[]; replayed: boolean }

// Derived keys live in a namespace a client key cannot reach: a client key is printable ASCII.
const SEP = '\u001f';
const digest = (...parts: string[]): string => createHash('sha256').update(parts.join(SEP)).digest('hex').slice(0, 32);

const fromError = (err: unknown): Outcome<TransferView> => failed(err instanceof GeopayError ? err.code : 'internal_error');
const isItem = (x: Item | Invalid): x is Item => 'src' in x;

export class Batches {
  constructor(private readonly ctx: PaymentsContext, private readonly transfers: Transfers) {}

  /**
   * Runs every item; the batch's own key refuses a different body before anything moves. A
   * repeat of the batch (its key claimed before) is a replay: each item answers from its own key.
   */
  run(tenantId: string, key: string, hash: string, items: BatchItem[], trace?: TraceContext): Promise<BatchOutcome> {
    return this.ctx.keys.run(tenantId, key, hash, async () => {
      const holder = await this.ctx.repos.keys.claimBatch(tenantId, key, hash);
      if (holder !== undefined && holder.requestHash !== hash) throw new GeopayError('idempotency_key_reused');
      const checked = await Promise.all(items.map((b, i) => this.validate(tenantId, i, b)));
      const results: Outcome<TransferView>[] = new Array(items.length);
      const groups = new Map<string, number[]>();
      const work: Promise<void>[] = [];
      items.forEach((b, i) => {
        const c = checked[i]!;
        if (b.linked !== undefined) groups.set(b.linked, [...(groups.get(b.linked) ?? []), i]);
        else if (isItem(c)) work.push(this.independent(tenantId, key, c, trace).then((o) => { results[i] = o; }));
        else results[i] = c.outcome;
      });
      for (const [name, idx] of groups) {
        const bad = idx.filter((i) => !isItem(checked[i]!));
        if (bad.length > 0) {
          // An invalid item fails its group before anything is held.
          for (const i of idx) results[i] = bad.includes(i) ? (checked[i] as Invalid).outcome : failed('linked_group_failed');
          continue;
        }
        work.push(this.linkedGroup(tenantId, key, name, idx.map((i) => checked[i] as Item), trace).then((rs) => { idx.forEach((i, n) => { results[i] = rs[n]!; }); }));
      }
      await Promise.all(work);
      return { type: 'batch', items: results, replayed: holder !== undefined && !holder.fresh };
    });
  }

  private async validate(tenantId: string, index: number, b: BatchItem): Promise<Item | Invalid> {
    const invalid = (code: ErrorCode): Invalid => ({ index, outcome: failed(code) });
    try {
      const amount = parseAmount(b.amount);
      if (!amount.ok) return invalid('invalid_amount');
      const currency = parseCurrency(b.currency);
      if (!currency.ok) return invalid('unknown_currency');
      const src = await this.ctx.directory.owned(tenantId, b.sourceAccountId);
      const dst = await this.ctx.directory.owned(tenantId, b.destinationAccountId);
      if (src.id === dst.id) return invalid('same_account');
      if (src.currency !== currency.value || dst.currency !== currency.value) return invalid('currency_mismatch');
      const { linked: _l, ...rest } = b;
      return { index, src: src.id, dst: dst.id, amount: amount.value, currency: currency.value, metadata: b.metadata ?? null, hash: requestHash('batch item', {}, rest) };
    } catch (err) {
      return { index, outcome: fromError(err) };
    }
  }

  private async independent(tenantId: string, key: string, it: Item, trace: TraceContext | undefined): Promise<Outcome<TransferView>> {
    try {
      return await this.transfers.moveMoney({
        kind: 'transfer', tenantId, key: `${key}${SEP}${it.index}`, hash: it.hash, src: it.src, dst: it.dst, currency: it.currency,
        metadata: it.metadata, amount: it.amount, trace, command: (transferId) => ({ type: 'Debit', transferId, amount: it.amount, currency: it.currency }),
      });
    } catch (err) {
      return fromError(err);
    }
  }

  /** All or nothing: hold every item, let one row decide, then capture or void every hold. */
  private async linkedGroup(tenantId: string, key: string, name: string, items: Item[], trace: TraceContext | undefined): Promise<Outcome<TransferView>[]> {
    const groupId = `grp_${digest(tenantId, key, name)}`;
    // Homed in the item's source region, where the hold is reserved.
    const holdIdOf = (it: Item): HoldId => makeHoldId(regionOf(it.src), digest(tenantId, key, 'hold', String(it.index)));
    const placed = await this.placeHolds({ tenantId, key, groupId, trace }, items, holdIdOf);
    const firstFailure = placed.find((c) => c !== undefined);
    // Phase 2: one row decides. The expiry sweeper competes for the same row, so a group is
    // never half captured and half released.
    const decision = await this.ctx.repos.groups.decide(groupId, firstFailure === undefined ? 'commit' : 'abort');
    if (decision === 'abort') {
      await Promise.all(items.map((it, i) => (placed[i] === undefined
        ? this.ctx.registry.send(it.src, { cmd: { type: 'Void', holdId: holdIdOf(it) } }, { trace })
        : undefined)));
      return items.map((_it, i) => failed(placed[i] ?? 'linked_group_failed'));
    }
    return Promise.all(items.map((it) => this.captureDecided(tenantId, key, it, holdIdOf(it), trace)));
  }

  /** Phase 1: reserve every item's amount on its source; the failure code of each, if any. */
  private placeHolds(g: { tenantId: string; key: string; groupId: string; trace: TraceContext | undefined }, items: Item[], holdIdOf: (it: Item) => HoldId): Promise<(ErrorCode | undefined)[]> {
    const { tenantId, key, groupId } = g;
    const expiresAt = new Date(this.ctx.clock() + this.ctx.config.linkedHoldTtlMs).toISOString();
    return Promise.all(items.map(async (it): Promise<ErrorCode | undefined> => {
      const r = await this.ctx.registry.send(it.src, {
        cmd: { type: 'Authorize', holdId: holdIdOf(it), destinationId: it.dst, amount: it.amount, currency: it.currency, multiCapture: false, expiresAt },
        idem: { tenantId, key: `${key}${SEP}hold${SEP}${it.index}`, requestHash: it.hash, resourceId: holdIdOf(it), onOk: { status: STORED_CREATED, body: null } },
        hold: { tenantId: tenantId as TenantId, metadata: it.metadata, groupId },
      }, { trace: g.trace });
      if (r.type === 'error') return r.error.code;
      // No stored answer: the hold was found by its id, placed by an earlier run whose key expired.
      if (r.type === 'duplicate') return r.stored.statusCode === STORED_CREATED || r.stored.statusCode === null ? undefined : ((r.stored.response as { code?: ErrorCode } | null)?.code ?? 'internal_error');
      return r.reply.ok ? undefined : r.reply.code;
    }));
  }

  private async captureDecided(tenantId: string, key: string, it: Item, holdId: HoldId, trace: TraceContext | undefined): Promise<Outcome<TransferView>> {
    try {
      const o = await this.transfers.moveMoney({
        kind: 'capture', tenantId, key: `${key}${SEP}capture${SEP}${it.index}`, hash: it.hash, src: it.src, dst: it.dst, currency: it.currency,
        metadata: it.metadata, amount: it.amount, holdId, trace,
        command: (transferId) => ({ type: 'Capture', holdId, transferId, amount: it.amount, at: new Date(this.ctx.clock()).toISOString(), decided: true }),
      });
      if (isNotActive(o)) {
        // Captured already (by the sweeper completing this decided group): answer that.
        const t = await this.ctx.repos.transfers.captureOfHold(holdId);
        if (t) {
          const { tenantId: _t, ...view } = t;
          return ok(view);
        }
      }
      return o;
    } catch (err) {
      return fromError(err);
    }
  }
}

/** hold_not_active, first answered or replayed from its key. */
function isNotActive(o: Outcome<TransferView>): boolean {
  if (o.type === 'failed') return o.code === 'hold_not_active';
  return o.type === 'stored' && (o.body as { code?: unknown } | null)?.code === 'hold_not_active';
}
