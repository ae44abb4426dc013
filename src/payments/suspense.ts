// Suspense: money returned to an account that was closed while its transfer was in flight. The
// closed account cannot spend it, so it carries it on to its tenant's suspense account of that
// region and currency (src/domain/account.ts, decideReturn). The admin lists those balances
// and pays them out to an account of the same tenant: a transfer of kind `payout`, through the
// ordinary saga, so the ledger stays balanced at every step.
import type { TraceContext } from '../observability/trace.ts';
import type { AccountId } from '../domain/ids.ts';
import { parseAccountId, suspenseParts } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { TransferView } from '../domain/views.ts';
import type { PaymentsContext } from './context.ts';
import type { Outcome } from './outcome.ts';
import { failed } from './outcome.ts';
import type { Transfers } from './transfers.ts';
import { parseAmountOrThrow } from './transfers.ts';

export interface SuspenseView { accountId: string; tenantId: string | null; region: string; currency: string; balance: string; updatedAt: string }

export interface PayoutRequest {
  key: string; hash: string; accountId: string; destinationAccountId: string;
  /** All that is there when not given. */
  amount: string | undefined;
  metadata: Record<string, unknown> | null;
  trace?: TraceContext | undefined;
}

/** Suspense accounts listed at most; there is one per tenant, region and currency that ever needed one. */
const MAX_LISTED = 1_000;

/**
 * The payout runs under the tenant's idempotency scope (its transfer is the tenant's), with the
 * admin's key in a namespace no client key reaches: a client key is printable ASCII.
 */
const ADMIN_KEY = (key: string): string => `admin\u001fpayout\u001f${key}`;

export class Suspense {
  constructor(private readonly ctx: PaymentsContext, private readonly transfers: Transfers) {}

  async list(): Promise<SuspenseView[]> {
    const rows = await this.ctx.repos.suspense.list(MAX_LISTED);
    return rows.map((r) => ({ ...r, balance: r.balance.toString() }));
  }

  async payout(r: PayoutRequest): Promise<Outcome<TransferView>> {
    const id = await this.suspenseAccount(r.accountId);
    const { tenantId, currency } = suspenseParts(id)!;
    const dst = await this.ctx.directory.owned(tenantId, r.destinationAccountId);
    if (dst.currency !== currency) throw new GeopayError('currency_mismatch');
    const amount = r.amount === undefined ? (await this.ctx.registry.read(id, 0, r.trace))?.balance ?? 0n : parseAmountOrThrow(r.amount);
    if (amount <= 0n) return failed('insufficient_funds');
    return this.transfers.moveMoney({
      kind: 'payout', tenantId, key: ADMIN_KEY(r.key), hash: r.hash, src: id, dst: dst.id, currency, metadata: r.metadata, amount, trace: r.trace,
      command: (transferId) => ({ type: 'Debit', transferId, amount, currency }),
    });
  }

  /** A suspense account that exists; account_not_found for any other id. */
  private async suspenseAccount(raw: string): Promise<AccountId> {
    const id = parseAccountId(raw);
    const entry = id && suspenseParts(id) ? await this.ctx.directory.get(id) : undefined;
    if (!id || entry?.kind !== 'suspense') throw new GeopayError('account_not_found');
    return id;
  }
}
