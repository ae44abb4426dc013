// Holds (two-phase payments): authorize reserves an amount on the source; capture sends all
// or part of it through the same saga as a transfer; void releases it; at its deadline it is
// released by the node's sweeper (src/payments/relay.ts) and can no longer be captured.
import type { TraceContext } from '../observability/trace.ts';
import type { AccountId, HoldId, TenantId } from '../domain/ids.ts';
import { parseHoldId, regionOf } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { GeopayError } from '../domain/errors.ts';
import type { HoldView, TransferView } from '../domain/views.ts';
import type { PaymentsContext } from './context.ts';
import type { Outcome } from './outcome.ts';
import { STORED_CREATED, ok } from './outcome.ts';
import { keyedHoldId } from './keyed-ids.ts';
import { resolve } from './resolve.ts';
import type { Transfers } from './transfers.ts';
import { parseAmountOrThrow } from './transfers.ts';

export interface AuthorizeRequest {
  tenantId: string; key: string; hash: string;
  sourceAccountId: string; destinationAccountId: string; amount: bigint; currency: Currency;
  metadata: Record<string, unknown> | null; expiresInSeconds: number | undefined; multiCapture: boolean;
  trace?: TraceContext | undefined;
}

type StoredHold = HoldView & { tenantId: string | null; groupId: string | null };

const view = ({ tenantId: _t, groupId: _g, ...h }: StoredHold): HoldView => h;

export class Holds {
  constructor(private readonly ctx: PaymentsContext, private readonly transfers: Transfers) {}

  async authorize(r: AuthorizeRequest): Promise<Outcome<HoldView>> {
    const { config, directory, keys, registry } = this.ctx;
    const ttlMs = r.expiresInSeconds === undefined ? config.holdDefaultTtlMs : r.expiresInSeconds * 1000;
    if (ttlMs > config.holdMaxTtlMs) throw new GeopayError('invalid_expiry');
    const src = await directory.owned(r.tenantId, r.sourceAccountId);
    const dst = await directory.owned(r.tenantId, r.destinationAccountId);
    if (src.id === dst.id) throw new GeopayError('same_account');
    if (src.currency !== r.currency || dst.currency !== r.currency) throw new GeopayError('currency_mismatch');
    return keys.run(r.tenantId, r.key, r.hash, async () => {
      const now = this.ctx.clock();
      // Derived from the request, so a retry after its key expired finds this hold, and homed in
      // the source's region, where the hold is reserved (keyed-ids.ts).
      const holdId = keyedHoldId(regionOf(src.id), { tenantId: r.tenantId, key: r.key, hash: r.hash });
      const at = new Date(now).toISOString();
      const placed: HoldView = {
        id: holdId, sourceAccountId: src.id, destinationAccountId: dst.id, amount: r.amount.toString(), captured: '0',
        remaining: r.amount.toString(), currency: r.currency, multiCapture: r.multiCapture, state: 'held',
        expiresAt: new Date(now + ttlMs).toISOString(), metadata: r.metadata, createdAt: at, updatedAt: at,
      };
      const res = await registry.send(src.id, {
        cmd: { type: 'Authorize', holdId, destinationId: dst.id, amount: r.amount, currency: r.currency, multiCapture: r.multiCapture, expiresAt: placed.expiresAt },
        idem: { tenantId: r.tenantId, key: r.key, requestHash: r.hash, resourceId: holdId, onOk: { status: STORED_CREATED, body: placed } },
        hold: { tenantId: r.tenantId as TenantId, metadata: r.metadata },
      }, { at, trace: r.trace });
      // A duplicate without a stored answer is a retry that found the hold by its id (its key
      // expired): it answers the hold as it stands.
      return resolve(res, r.hash, () => ok(placed), async (s) => ok(await this.get(r.tenantId, s.resourceId ?? holdId)));
    });
  }

  /** The tenant's hold; hold_not_found for any other. */
  async get(tenantId: string, raw: string): Promise<HoldView> {
    return view(await this.holdOf(tenantId, raw));
  }

  /**
   * The capture is a transfer from the hold's source; its actor decides against the hold in
   * memory, so concurrent captures of one hold are serialised there.
   */
  async capture(r: { tenantId: string; key: string; holdId: string; amount: string | undefined; metadata: Record<string, unknown> | null; hash: (holdId: HoldId) => string; trace?: TraceContext | undefined }): Promise<Outcome<TransferView>> {
    const hold = outsideAnyGroup(await this.holdOf(r.tenantId, r.holdId));
    const amount = r.amount === undefined ? undefined : parseAmountOrThrow(r.amount);
    const holdId = hold.id as HoldId;
    return this.transfers.moveMoney({
      kind: 'capture', tenantId: r.tenantId, key: r.key, hash: r.hash(holdId), src: hold.sourceAccountId as AccountId, dst: hold.destinationAccountId as AccountId,
      currency: hold.currency as Currency, metadata: r.metadata, amount, holdId, trace: r.trace,
      command: (transferId) => ({ type: 'Capture', holdId, transferId, amount, at: new Date(this.ctx.clock()).toISOString() }),
    });
  }

  /** Releases the hold; with a key, a replay answers the hold as it stands. */
  async void(r: { tenantId: string; key: string | undefined; holdId: string; hash: (holdId: HoldId) => string; trace?: TraceContext | undefined }): Promise<Outcome<HoldView>> {
    const hold = outsideAnyGroup(await this.holdOf(r.tenantId, r.holdId));
    const holdId = hold.id as HoldId;
    const hash = r.hash(holdId);
    const { key, tenantId } = r;
    const exec = async (): Promise<Outcome<HoldView>> => {
      const res = await this.ctx.registry.send(hold.sourceAccountId as AccountId, {
        cmd: { type: 'Void', holdId },
        ...(key ? { idem: { tenantId, key, requestHash: hash, resourceId: holdId, onOk: null } } : {}),
      }, { trace: r.trace });
      const readBack = async (): Promise<Outcome<HoldView>> => ok(await this.get(tenantId, holdId));
      return resolve(res, hash, readBack, readBack);
    };
    return key ? this.ctx.keys.run(tenantId, key, hash, exec) : exec();
  }

  private async holdOf(tenantId: string, raw: string): Promise<StoredHold> {
    const id = parseHoldId(raw);
    const h = id ? await this.ctx.repos.holds.get(id) : undefined;
    if (!h || h.tenantId !== tenantId) throw new GeopayError('hold_not_found');
    return h;
  }
}

/**
 * A linked batch group's hold is captured or released by its group's decision alone
 * (src/payments/batch.ts, the sweeper in relay.ts): a capture or void of one of them from
 * outside would leave some transfers of an all-or-nothing group without the others.
 */
function outsideAnyGroup(hold: StoredHold): StoredHold {
  if (hold.groupId !== null) throw new GeopayError('hold_in_linked_group');
  return hold;
}
