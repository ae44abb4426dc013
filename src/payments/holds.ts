// Holds (two-phase payments): authorize reserves an amount on the source; capture sends all
// or part of it through the same saga as a transfer; void releases it; at its deadline it is
// released by the node's sweeper (src/payments/relay.ts) and can no longer be captured.
import { randomBytes } from 'node:crypto';
import type { AccountId, HoldId, TenantId } from '../domain/ids.ts';
import { makeHoldId, parseHoldId, uuidv7Hex } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { GeopayError } from '../domain/errors.ts';
import type { HoldView, TransferView } from '../domain/views.ts';
import type { PaymentsContext } from './context.ts';
import type { Outcome } from './outcome.ts';
import { STORED_CREATED, ok } from './outcome.ts';
import { resolve, stillRunning } from './resolve.ts';
import type { Transfers } from './transfers.ts';
import { parseAmountOrThrow } from './transfers.ts';

export interface AuthorizeRequest {
  tenantId: string; key: string; hash: string;
  sourceAccountId: string; destinationAccountId: string; amount: bigint; currency: Currency;
  metadata: Record<string, unknown> | null; expiresInSeconds: number | undefined; multiCapture: boolean;
}

const view = ({ tenantId: _t, ...h }: HoldView & { tenantId: string | null }): HoldView => h;

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
      const holdId = makeHoldId(uuidv7Hex(now, randomBytes(10)));
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
      }, { at });
      return resolve(res, r.hash, () => ok(placed), stillRunning);
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
  async capture(r: { tenantId: string; key: string; holdId: string; amount: string | undefined; metadata: Record<string, unknown> | null; hash: (holdId: HoldId) => string }): Promise<Outcome<TransferView>> {
    const hold = await this.holdOf(r.tenantId, r.holdId);
    const amount = r.amount === undefined ? undefined : parseAmountOrThrow(r.amount);
    const holdId = hold.id as HoldId;
    return this.transfers.moveMoney({
      kind: 'capture', tenantId: r.tenantId, key: r.key, hash: r.hash(holdId), src: hold.sourceAccountId as AccountId, dst: hold.destinationAccountId as AccountId,
      currency: hold.currency as Currency, metadata: r.metadata, amount, holdId,
      command: (transferId) => ({ type: 'Capture', holdId, transferId, amount, at: new Date(this.ctx.clock()).toISOString() }),
    });
  }

  /** Releases the hold; with a key, a replay answers the hold as it stands. */
  async void(r: { tenantId: string; key: string | undefined; holdId: string; hash: (holdId: HoldId) => string }): Promise<Outcome<HoldView>> {
    const hold = await this.holdOf(r.tenantId, r.holdId);
    const holdId = hold.id as HoldId;
    const hash = r.hash(holdId);
    const { key, tenantId } = r;
    const exec = async (): Promise<Outcome<HoldView>> => {
      const res = await this.ctx.registry.send(hold.sourceAccountId as AccountId, {
        cmd: { type: 'Void', holdId },
        ...(key ? { idem: { tenantId, key, requestHash: hash, resourceId: holdId, onOk: null } } : {}),
      });
      const readBack = async (): Promise<Outcome<HoldView>> => ok(await this.get(tenantId, holdId));
      return resolve(res, hash, readBack, readBack);
    };
    return key ? this.ctx.keys.run(tenantId, key, hash, exec) : exec();
  }

  private async holdOf(tenantId: string, raw: string): Promise<HoldView & { tenantId: string | null }> {
    const id = parseHoldId(raw);
    const h = id ? await this.ctx.repos.holds.get(id) : undefined;
    if (!h || h.tenantId !== tenantId) throw new GeopayError('hold_not_found');
    return h;
  }
}
