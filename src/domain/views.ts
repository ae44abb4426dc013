// The shapes in which accounts, transfers and holds are shown. Pure, so the actor can store the
// exact response of a request with its idempotency key in the same transaction as the write.
import type { AccountState } from './account.ts';
import { available } from './account.ts';

export interface AccountView {
  id: string; tenantId: string | null; currency: string; region: string; status: string;
  balance: string; held: string; available: string; overdraftLimit: string; seq: number;
  metadata: Record<string, unknown>; createdAt: string;
}

export function accountView(s: AccountState): AccountView {
  return {
    id: s.id, tenantId: s.tenantId, currency: s.currency, region: s.region, status: s.status,
    balance: s.balance.toString(), held: s.held.toString(),
    available: s.kind === 'external' ? s.balance.toString() : available(s).toString(),
    overdraftLimit: s.overdraftLimit.toString(), seq: s.seq, metadata: s.metadata, createdAt: s.createdAt,
  };
}

export interface TransferView {
  id: string; kind: string; sourceAccountId: string; destinationAccountId: string; amount: string;
  currency: string; state: string; refusalCode: string | null; metadata: Record<string, unknown> | null;
  /** The hold a capture came from, the transfer a refund gives back, and what was refunded of this one. */
  holdId: string | null; refundOf: string | null; refunded: string;
  createdAt: string; updatedAt: string;
}

export interface HoldView {
  id: string; sourceAccountId: string; destinationAccountId: string; amount: string; captured: string; remaining: string;
  currency: string; multiCapture: boolean; state: string; expiresAt: string; metadata: Record<string, unknown> | null;
  createdAt: string; updatedAt: string;
}
