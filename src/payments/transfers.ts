// Money movement: deposits, withdrawals, transfers, refunds and captures are one saga. The
// source actor commits the debit with the transfer record and the idempotency key; the
// destination applies the credit exactly once; the request waits (bounded) for the credit.
import type { TraceContext } from '../observability/trace.ts';
import type { AccountCommand, TransferKind } from '../domain/account.ts';
import type { AccountId, Region, TenantId, TransferId } from '../domain/ids.ts';
import { externalAccountId, parseTransferId, regionOf } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { parseAmount } from '../domain/money.ts';
import { GeopayError } from '../domain/errors.ts';
import type { TransferView } from '../domain/views.ts';
import type { PaymentsContext } from './context.ts';
import type { Outcome } from './outcome.ts';
import { ok, transferAnswerStatus } from './outcome.ts';
import { keyedTransferId } from './keyed-ids.ts';
import { resolve } from './resolve.ts';
import type { TransferOutcome, TransferWait } from './saga.ts';
import { outcomeWithin } from './saga.ts';
import type { MoneyOutcome } from '../observability/metrics.ts';

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
  /** The request's trace: the debit's owner and the saga's legs log under it. */
  trace?: TraceContext | undefined;
}

/** What a client asks to move: ids as sent, amount and currency parsed. */
export interface MoneyRequest { tenantId: string; key: string; hash: string; amount: bigint; currency: Currency; metadata: Record<string, unknown> | null; trace?: TraceContext | undefined }

/** The metrics' outcome of a transfer as first answered. */
const OUTCOME_OF_STATE: Record<string, MoneyOutcome> = { settled: 'settled', returned: 'returned', debited: 'pending', refused: 'pending' };

export class Transfers {
  constructor(private readonly ctx: PaymentsContext) {}

  async transfer(r: MoneyRequest & { sourceAccountId: string; destinationAccountId: string }): Promise<Outcome<TransferView>> {
    const src = await this.ctx.directory.owned(r.tenantId, r.sourceAccountId);
    const dst = await this.ctx.directory.owned(r.tenantId, r.destinationAccountId);
    if (src.id === dst.id) throw new GeopayError('same_account');
    if (src.currency !== r.currency || dst.currency !== r.currency) throw new GeopayError('currency_mismatch');
    return this.move('transfer', r, src.id, dst.id);
  }

  /** A deposit moves money in from the region's external account; a withdrawal out to it. */
  async external(kind: 'deposit' | 'withdrawal', r: MoneyRequest & { accountId: string }): Promise<Outcome<TransferView>> {
    const acc = await this.ctx.directory.owned(r.tenantId, r.accountId);
    if (acc.currency !== r.currency) throw new GeopayError('currency_mismatch');
    const ext = await this.ensureExternal(acc.region as Region, r.currency);
    const [src, dst] = kind === 'deposit' ? [ext, acc.id] : [acc.id, ext];
    return this.move(kind, r, src, dst);
  }

  /**
   * The refund's source is the original destination: its actor is the one writer of what is
   * left to refund, so concurrent refunds can never add up to more than the amount.
   */
  async refund(r: { tenantId: string; key: string; hash: string; transferId: string; amount: string | undefined; metadata: Record<string, unknown> | null; trace?: TraceContext | undefined }): Promise<Outcome<TransferView>> {
    const originalId = parseTransferId(r.transferId);
    if (!originalId) throw new GeopayError('transfer_not_found');
    const orig = await this.ctx.repos.transfers.get(originalId);
    if (!orig || orig.tenantId !== r.tenantId) throw new GeopayError('transfer_not_found');
    if (orig.state !== 'settled' || orig.kind === 'refund') throw new GeopayError('transfer_not_refundable');
    const left = BigInt(orig.amount) - BigInt(orig.refunded);
    const amount = r.amount === undefined ? left : parseAmountOrThrow(r.amount);
    if (amount <= 0n) throw new GeopayError('refund_exceeds_transfer');
    const currency = orig.currency as Currency;
    return this.moveMoney({
      kind: 'refund', tenantId: r.tenantId, key: r.key, hash: r.hash, src: orig.destinationAccountId as AccountId, dst: orig.sourceAccountId as AccountId,
      currency, metadata: r.metadata, amount, refundOf: originalId, trace: r.trace,
      command: (transferId) => ({ type: 'Refund', transferId, originalId, amount, currency, refundable: left }),
    });
  }

  /** The tenant's transfer; transfer_not_found for any other. */
  async get(tenantId: string, raw: string): Promise<TransferView> {
    const id = parseTransferId(raw);
    if (!id) throw new GeopayError('transfer_not_found');
    return this.read(id, tenantId);
  }

  /**
   * Every movement of money is a transfer created by its source actor: it commits the debit,
   * the transfer record and the idempotency key together; then the request waits (bounded)
   * for the credit, and answers the transfer as it stands (settled, returned or in flight).
   * That first answer is what every replay gives back (stored beside the key once decided).
   * The transfer's id is derived from the request (keyed-ids.ts): a retry of it, however late,
   * finds this transfer instead of making a second.
   */
  async moveMoney(m: MoveSpec): Promise<Outcome<TransferView>> {
    const o = await this.moveOnce(m);
    if (o.type === 'ok' && !o.replayed) this.ctx.metrics.transfers.inc({ kind: m.kind, outcome: OUTCOME_OF_STATE[o.value.state] ?? 'pending' });
    else if (o.type === 'failed' && !o.replayed) this.ctx.metrics.transfers.inc({ kind: m.kind, outcome: 'refused' });
    return o;
  }

  private moveOnce(m: MoveSpec): Promise<Outcome<TransferView>> {
    const { config, registry, saga, keys } = this.ctx;
    return keys.run(m.tenantId, m.key, m.hash, async (keep) => {
      const now = this.ctx.clock();
      // Homed where its debit and its row are committed: the source's region (keyed-ids.ts).
      const transferId = keyedTransferId(regionOf(m.src), { tenantId: m.tenantId, key: m.key, hash: m.hash });
      const at = new Date(now).toISOString();
      // Wait for the credit from before the debit is sent: it can land before we look. A debit
      // forwarded to its owner is answered with the outcome (src/payments/forwarded.ts); else the
      // outcome commits here, or is answered here, or (a domestic leg on the bus) the bus tells.
      const forwarded = !registry.isLocal(m.src);
      const remote = forwarded || !registry.isLocal(m.dst);
      const settled = saga.waitForTransfer(transferId, config.askTimeoutMs + config.transferWaitMs, !forwarded && saga.outcomeElsewhere(m.src, m.dst));
      const r = await registry.send(m.src, {
        cmd: m.command(transferId),
        idem: { tenantId: m.tenantId, key: m.key, requestHash: m.hash, resourceId: transferId, onOk: null },
        transfer: { destinationId: m.dst, kind: m.kind, tenantId: m.tenantId as TenantId, metadata: m.metadata },
      }, { at, trace: m.trace });
      if (r.type !== 'done' || !r.reply.ok) settled.cancel();
      return resolve(r, m.hash, async () => {
        const view = await this.firstAnswer(transferId, m, at, settled, remote);
        // Stored off the request's path; until it is, this process's duplicates share it (keep).
        // Lost (a crash in between, a failed write), a replay answers the transfer as it stands.
        keep(this.ctx.repos.keys.storeAnswer(regionOf(m.src), { tenantId: m.tenantId, key: m.key, requestHash: m.hash, status: transferAnswerStatus(view.state), body: view }) ?? Promise.resolve());
        return ok(view);
      }, async (s) => ok(await this.read(s.resourceId!, m.tenantId)));
    });
  }

  /** The transfer as its request answers it, once the credit landed or TRANSFER_WAIT_MS passed. */
  private async firstAnswer(transferId: TransferId, m: MoveSpec, at: string, settled: TransferWait, remote: boolean): Promise<TransferView> {
    const outcome = await this.settlement(transferId, settled, remote);
    // A return carries the refusal code, and a capture of all that is left its amount,
    // which only the row has: read it (rare).
    if (outcome?.state === 'returned' || m.amount === undefined) return this.read(transferId, m.tenantId);
    // Otherwise the answer is what was committed, built here exactly as the row reads back.
    return {
      id: transferId, kind: m.kind, sourceAccountId: m.src, destinationAccountId: m.dst, amount: m.amount.toString(), currency: m.currency,
      state: outcome?.state ?? 'debited', refusalCode: null, metadata: m.metadata, holdId: m.holdId ?? null, refundOf: m.refundOf ?? null,
      refunded: '0', createdAt: at, updatedAt: outcome?.at ?? at,
    };
  }

  /**
   * The transfer's outcome within TRANSFER_WAIT_MS, or undefined while it is still in flight.
   * `remote`: a leg runs on another node, so the outcome may have been committed there
   * unheard (a notice is at most once, an owner's answer can be lost): one read makes up for it.
   */
  private async settlement(id: TransferId, settled: TransferWait, remote: boolean): Promise<TransferOutcome | undefined> {
    const outcome = await outcomeWithin(settled, this.ctx.config.transferWaitMs);
    return outcome === undefined && remote ? this.ctx.saga.outcomeOf(id) : outcome;
  }

  private async read(id: string, tenantId: string): Promise<TransferView> {
    const t = await this.ctx.repos.transfers.get(id);
    if (!t || t.tenantId !== tenantId) throw new GeopayError('transfer_not_found');
    const { tenantId: _t, ...view } = t;
    return view;
  }

  private move(kind: 'transfer' | 'deposit' | 'withdrawal', r: MoneyRequest, src: AccountId, dst: AccountId): Promise<Outcome<TransferView>> {
    const { amount, currency } = r;
    return this.moveMoney({
      kind, tenantId: r.tenantId, key: r.key, hash: r.hash, src, dst, currency, metadata: r.metadata, amount, trace: r.trace,
      command: (transferId) => ({ type: 'Debit', transferId, amount, currency }),
    });
  }

  /** The external account of a region and currency exists before money moves through it. */
  private async ensureExternal(region: Region, currency: Currency): Promise<AccountId> {
    const id = externalAccountId(region, currency);
    const failed = await this.ctx.registry.ensureLedgerAccount(id);
    if (failed?.type === 'error') throw failed.error;
    if (failed) throw new GeopayError('internal_error', `external account: ${failed.type === 'done' && !failed.reply.ok ? failed.reply.code : failed.type}`);
    return id;
  }
}

/** An amount the client sent, checked only once the resource it applies to was found. */
export function parseAmountOrThrow(raw: string): bigint {
  const a = parseAmount(raw);
  if (!a.ok) throw new GeopayError('invalid_amount');
  return a.value;
}
