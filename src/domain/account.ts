// The account model, pure: decide(state, command) -> { reply, events } and
// evolve(state, event) -> state. The actor only sequences these with persistence, so every
// rule about money lives here and is tested without I/O.
import type { AccountId, HoldId, Region, TenantId, TransferId } from './ids.ts';
import { suspenseAccountId } from './ids.ts';
import type { Currency } from './money.ts';
import { MAX_AMOUNT } from './money.ts';
import { invariant } from './assert.ts';
import type { ErrorCode } from './errors.ts';

export type AccountStatus = 'open' | 'frozen' | 'closed';
/** `suspense`: where money returned to a closed customer account is kept for the admin to pay out. */
export type AccountKind = 'customer' | 'external' | 'suspense';

export interface AccountState {
  readonly id: AccountId;
  readonly kind: AccountKind;
  readonly tenantId: TenantId | null;
  readonly currency: Currency;
  readonly region: Region;
  readonly status: AccountStatus;
  readonly balance: bigint;
  /** Sum of the active holds' remaining amounts: reserved, not spendable. */
  readonly held: bigint;
  /** Active holds by id; a hold leaves when captured in full, voided or expired. */
  readonly holds: Readonly<Record<string, Hold>>;
  /** How far below zero the balance may go; external accounts have no limit. */
  readonly overdraftLimit: bigint;
  /** Seq of the last journal entry applied. */
  readonly seq: number;
  readonly metadata: Record<string, unknown>;
  readonly createdAt: string;
}

/** `suspense`: money returned to a closed account, carried on to its suspense account; `payout`: the admin paying it out. */
export type TransferKind = 'transfer' | 'deposit' | 'withdrawal' | 'capture' | 'refund' | 'suspense' | 'payout';

export interface Hold {
  readonly id: HoldId;
  readonly destinationId: AccountId;
  readonly amount: bigint;
  /** What is still reserved and capturable. */
  readonly remaining: bigint;
  readonly multiCapture: boolean;
  /** ISO 8601; at or after it the hold can only be released. */
  readonly expiresAt: string;
}

export type HoldReleaseReason = 'voided' | 'expired';

// Commands: imperative.
export type AccountCommand =
  | { type: 'Open'; id: AccountId; kind: AccountKind; tenantId: TenantId | null; currency: Currency; region: Region;
      overdraftLimit: bigint; metadata: Record<string, unknown>; at: string }
  | { type: 'Freeze' }
  | { type: 'Unfreeze' }
  | { type: 'Close' }
  /** Source leg of a transfer. */
  | { type: 'Debit'; transferId: TransferId; amount: bigint; currency: Currency }
  /** Destination leg; `alreadyApplied` says the transfer left `debited` before (delivered twice). */
  | { type: 'Credit'; transferId: TransferId; amount: bigint; currency: Currency; alreadyApplied: boolean }
  /**
   * The destination refused: the money comes back to the source. A closed source carries it on
   * to its suspense account in a transfer `forwardId`. `refundOf`: the transfer a returned
   * refund was taken from, whose claim the return gives back.
   */
  | { type: 'Return'; transferId: TransferId; amount: bigint; alreadyApplied: boolean; forwardId: TransferId; refundOf?: TransferId }
  /** Reserve an amount for a later capture. */
  | { type: 'Authorize'; holdId: HoldId; destinationId: AccountId; amount: bigint; currency: Currency; multiCapture: boolean; expiresAt: string }
  /** Send all (amount undefined) or part of a hold's remaining amount; `at` decides expiry. */
  | { type: 'Capture'; holdId: HoldId; transferId: TransferId; amount: bigint | undefined; at: string; decided?: boolean }
  | { type: 'Void'; holdId: HoldId }
  | { type: 'Expire'; holdId: HoldId; at: string }
  /** Send money of a settled transfer back to its source; `refundable` is what is left of it. */
  | { type: 'Refund'; transferId: TransferId; originalId: TransferId; amount: bigint; currency: Currency; refundable: bigint }
  /**
   * A cross-region transfer's outcome, back at its source: the destination's region credited
   * it (`refusal` null) or refused it. The transfer row, the source region's, moves to
   * `settled` or `refused` (then returned). `alreadyApplied`: it left `debited` before.
   */
  | { type: 'Settle'; transferId: TransferId; refusal: ErrorCode | null; alreadyApplied: boolean };

// Events: past tense. Each journaled event is one row of the journal with the next seq.
export type AccountEvent =
  | { type: 'Opened'; id: AccountId; kind: AccountKind; tenantId: TenantId | null; currency: Currency; region: Region;
      overdraftLimit: bigint; metadata: Record<string, unknown>; at: string }
  | { type: 'Frozen' }
  | { type: 'Unfrozen' }
  | { type: 'Closed' }
  | { type: 'Debited'; transferId: TransferId; amount: bigint }
  | { type: 'Credited'; transferId: TransferId; amount: bigint }
  /** `refundOf`: a refund came back, and gives its claim on that transfer back (rows.ts). */
  | { type: 'Returned'; transferId: TransferId; amount: bigint; refundOf?: TransferId }
  /** Returned money a closed account cannot hold, sent on to its suspense account as transfer `transferId`. */
  | { type: 'SentToSuspense'; transferId: TransferId; returnedId: TransferId; destinationId: AccountId; amount: bigint }
  /** Not journaled on the account: it moves the transfer to `refused`. */
  | { type: 'CreditRefused'; transferId: TransferId; reason: ErrorCode }
  /** Not journaled: another region credited this account's outgoing transfer, which is settled. */
  | { type: 'Settled'; transferId: TransferId }
  | { type: 'HoldPlaced'; holdId: HoldId; destinationId: AccountId; amount: bigint; multiCapture: boolean; expiresAt: string }
  /** `released` is what a final capture frees beyond the captured amount. */
  | { type: 'HoldCaptured'; holdId: HoldId; transferId: TransferId; destinationId: AccountId; amount: bigint; released: bigint }
  | { type: 'HoldReleased'; holdId: HoldId; amount: bigint; reason: HoldReleaseReason }
  | { type: 'RefundDebited'; transferId: TransferId; originalId: TransferId; amount: bigint };

export type AccountReply =
  | { ok: true; state: AccountState }
  | { ok: false; code: ErrorCode };

export interface Decision {
  reply: AccountReply;
  events: AccountEvent[];
}

export type JournalKind = 'open' | 'freeze' | 'unfreeze' | 'close' | 'debit' | 'credit' | 'return' | 'hold' | 'capture' | 'release';

export function journalKind(e: AccountEvent): JournalKind | undefined {
  switch (e.type) {
    case 'Opened': return 'open';
    case 'Frozen': return 'freeze';
    case 'Unfrozen': return 'unfreeze';
    case 'Closed': return 'close';
    case 'Debited': return 'debit';
    case 'Credited': return 'credit';
    case 'Returned': return 'return';
    case 'HoldPlaced': return 'hold';
    case 'HoldCaptured': return 'capture';
    case 'HoldReleased': return 'release';
    case 'RefundDebited': return 'debit';
    case 'SentToSuspense': return 'debit';
    case 'CreditRefused': return undefined;
    case 'Settled': return undefined;
    default: return assertNever(e);
  }
}

/** The signed change an event makes to the held total. */
export function heldDelta(e: AccountEvent): bigint {
  switch (e.type) {
    case 'HoldPlaced': return e.amount;
    case 'HoldCaptured': return -(e.amount + e.released);
    case 'HoldReleased': return -e.amount;
    default: return 0n;
  }
}

/** The signed amount an event moves on the account's balance. */
export function signedAmount(e: AccountEvent): bigint {
  switch (e.type) {
    case 'Debited':
    case 'RefundDebited':
    case 'SentToSuspense':
    case 'HoldCaptured': return -e.amount;
    case 'Credited':
    case 'Returned': return e.amount;
    case 'Opened': case 'Frozen': case 'Unfrozen': case 'Closed': case 'CreditRefused': case 'Settled': case 'HoldPlaced': case 'HoldReleased': return 0n;
    default: return assertNever(e);
  }
}

/** Funds the account can spend now: balance, less what holds reserve, plus overdraft. */
export function available(s: AccountState): bigint {
  return s.balance - s.held + s.overdraftLimit;
}

/** May a customer account spend `amount` now? External accounts have no limit. */
const canSpend = (s: AccountState, amount: bigint): boolean => s.kind === 'external' || available(s) >= amount;

const rejected = (code: ErrorCode): Decision => ({ reply: { ok: false, code }, events: [] });

/** A balance must fit the journal's BIGINT: beyond +-(2^63-1) the move is refused. */
const fits = (balance: bigint): boolean => balance <= MAX_AMOUNT && balance >= -MAX_AMOUNT;

/** Why the account may not send money in `currency` now, if it may not. */
function refuseOutgoing(state: AccountState, currency: Currency): ErrorCode | undefined {
  if (state.status === 'frozen') return 'account_frozen';
  if (state.status === 'closed') return 'account_closed';
  if (currency !== state.currency) return 'currency_mismatch';
  return undefined;
}

type Accept = (...events: AccountEvent[]) => Decision;
type HoldCommand = Extract<AccountCommand, { type: 'Capture' | 'Void' | 'Expire' }>;

/** Capture, void and expiry act on one hold in memory. */
function decideOnHold(state: AccountState, cmd: HoldCommand, accepted: Accept): Decision {
  const hold = state.holds[cmd.holdId];
  switch (cmd.type) {
    case 'Capture': {
      if (!hold) return rejected('hold_not_active');
      // Past its deadline a hold is only ever released, never captured; unless the capture
      // was decided before the deadline (a committed linked group), which it must complete.
      if (cmd.at >= hold.expiresAt && cmd.decided !== true) return rejected('hold_expired');
      const amount = cmd.amount ?? hold.remaining;
      if (amount > hold.remaining) return rejected('capture_exceeds_hold');
      const released = hold.multiCapture ? 0n : hold.remaining - amount;
      return accepted({ type: 'HoldCaptured', holdId: hold.id, transferId: cmd.transferId, destinationId: hold.destinationId, amount, released });
    }
    case 'Void':
      if (!hold) return rejected('hold_not_active');
      return accepted({ type: 'HoldReleased', holdId: hold.id, amount: hold.remaining, reason: 'voided' });
    case 'Expire':
      // Already gone (captured, voided, expired) or not yet due: nothing to do.
      if (!hold || cmd.at < hold.expiresAt) return accepted();
      return accepted({ type: 'HoldReleased', holdId: hold.id, amount: hold.remaining, reason: 'expired' });
    default:
      return assertNever(cmd);
  }
}

/** A credit that cannot land is refused as an event (the saga returns it), never dropped. */
function decideCredit(state: AccountState, cmd: Extract<AccountCommand, { type: 'Credit' }>, accepted: Accept): Decision {
  // A repeated delivery is answered as applied and changes nothing: exactly once.
  if (cmd.alreadyApplied) return accepted();
  if (cmd.currency !== state.currency) return accepted({ type: 'CreditRefused', transferId: cmd.transferId, reason: 'currency_mismatch' });
  if (state.status === 'closed') return accepted({ type: 'CreditRefused', transferId: cmd.transferId, reason: 'account_closed' });
  if (!fits(state.balance + cmd.amount)) return accepted({ type: 'CreditRefused', transferId: cmd.transferId, reason: 'balance_out_of_range' });
  return accepted({ type: 'Credited', transferId: cmd.transferId, amount: cmd.amount });
}

/**
 * Money owed back is always taken, whatever the status: it must never vanish. A closed account
 * can never send it on, though, so in the same commit it goes on to the tenant's suspense
 * account of the region and currency (a transfer of kind `suspense`), where the admin sees it
 * and pays it out; the closed account stays at 0.
 */
function decideReturn(state: AccountState, cmd: Extract<AccountCommand, { type: 'Return' }>, accepted: Accept): Decision {
  if (cmd.alreadyApplied) return accepted();
  const returned: AccountEvent = { type: 'Returned', transferId: cmd.transferId, amount: cmd.amount, ...(cmd.refundOf ? { refundOf: cmd.refundOf } : {}) };
  if (state.status !== 'closed') return accepted(returned);
  // Only a customer account closes (Close refuses the others), and it always has a tenant.
  invariant(state.tenantId !== null, 'a closed account without a tenant');
  const destinationId = suspenseAccountId(state.region, state.currency, state.tenantId);
  return accepted(returned, { type: 'SentToSuspense', transferId: cmd.forwardId, returnedId: cmd.transferId, destinationId, amount: cmd.amount });
}

export function decide(state: AccountState | undefined, cmd: AccountCommand): Decision {
  if (state === undefined) {
    if (cmd.type !== 'Open') return rejected('account_not_found');
    const { type: _t, ...fields } = cmd;
    const event: AccountEvent = { type: 'Opened', ...fields };
    return { reply: { ok: true, state: evolve(undefined, event) }, events: [event] };
  }
  // Amounts were validated at the edge; a non-positive one here is our own bug.
  if (cmd.type === 'Debit' || cmd.type === 'Credit' || cmd.type === 'Return' || cmd.type === 'Authorize' || cmd.type === 'Refund') {
    invariant(cmd.amount > 0n, 'amount must be positive');
  }
  if (cmd.type === 'Capture' && cmd.amount !== undefined) invariant(cmd.amount > 0n, 'capture amount must be positive');
  const accepted: Accept = (...events) => {
    let s: AccountState = state;
    for (const e of events) s = evolve(s, e);
    return { reply: { ok: true, state: s }, events };
  };
  switch (cmd.type) {
    case 'Open':
      return rejected('account_exists');
    case 'Freeze':
      if (state.status === 'closed') return rejected('account_closed');
      return state.status === 'frozen' ? accepted() : accepted({ type: 'Frozen' });
    case 'Unfreeze':
      if (state.status === 'closed') return rejected('account_closed');
      return state.status === 'open' ? accepted() : accepted({ type: 'Unfrozen' });
    case 'Close':
      if (state.status === 'closed') return accepted();
      // External and suspense accounts belong to the ledger, not to a customer.
      if (state.kind !== 'customer') return rejected('forbidden');
      if (state.balance !== 0n) return rejected('balance_not_zero');
      if (state.held !== 0n) return rejected('holds_outstanding');
      return accepted({ type: 'Closed' });
    case 'Debit': {
      const refused = refuseOutgoing(state, cmd.currency);
      if (refused) return rejected(refused);
      if (!canSpend(state, cmd.amount)) return rejected('insufficient_funds');
      if (!fits(state.balance - cmd.amount)) return rejected('balance_out_of_range');
      return accepted({ type: 'Debited', transferId: cmd.transferId, amount: cmd.amount });
    }
    case 'Authorize': {
      const refused = refuseOutgoing(state, cmd.currency);
      if (refused) return rejected(refused);
      if (!canSpend(state, cmd.amount)) return rejected('insufficient_funds');
      if (!fits(state.balance - state.held - cmd.amount)) return rejected('balance_out_of_range');
      return accepted({ type: 'HoldPlaced', holdId: cmd.holdId, destinationId: cmd.destinationId, amount: cmd.amount, multiCapture: cmd.multiCapture, expiresAt: cmd.expiresAt });
    }
    case 'Capture':
    case 'Void':
    case 'Expire':
      return decideOnHold(state, cmd, accepted);
    case 'Refund': {
      const refused = refuseOutgoing(state, cmd.currency);
      if (refused) return rejected(refused);
      if (cmd.amount > cmd.refundable) return rejected('refund_exceeds_transfer');
      if (!canSpend(state, cmd.amount)) return rejected('insufficient_funds');
      if (!fits(state.balance - cmd.amount)) return rejected('balance_out_of_range');
      return accepted({ type: 'RefundDebited', transferId: cmd.transferId, originalId: cmd.originalId, amount: cmd.amount });
    }
    case 'Credit':
      return decideCredit(state, cmd, accepted);
    case 'Return':
      return decideReturn(state, cmd, accepted);
    case 'Settle':
      // Whatever the account's status now: the money left it when the transfer was debited.
      if (cmd.alreadyApplied) return accepted();
      return accepted(cmd.refusal === null ? { type: 'Settled', transferId: cmd.transferId } : { type: 'CreditRefused', transferId: cmd.transferId, reason: cmd.refusal });
    default:
      return assertNever(cmd);
  }
}

// Most accounts have no holds and no metadata; a million resident ones share these two
// instead of carrying an empty object each. Frozen: states are never changed in place.
const NO_HOLDS: Readonly<Record<string, Hold>> = Object.freeze({});
const NO_METADATA: Record<string, unknown> = Object.freeze({});

const holdsOrNone = (holds: Readonly<Record<string, Hold>>): Readonly<Record<string, Hold>> => (Object.keys(holds).length === 0 ? NO_HOLDS : holds);
const metadataOrNone = (metadata: Record<string, unknown>): Record<string, unknown> => (Object.keys(metadata).length === 0 ? NO_METADATA : metadata);

/** A state read back from storage, its empty holds and metadata replaced by the shared ones. */
export function withSharedEmpties(s: AccountState): AccountState {
  return { ...s, holds: holdsOrNone(s.holds), metadata: metadataOrNone(s.metadata) };
}

export function evolve(state: AccountState | undefined, e: AccountEvent): AccountState {
  if (e.type === 'Opened') {
    if (state !== undefined) throw new Error('Opened applied to an existing account');
    const metadata = metadataOrNone(e.metadata);
    return {
      id: e.id, kind: e.kind, tenantId: e.tenantId, currency: e.currency, region: e.region, status: 'open',
      balance: 0n, held: 0n, holds: NO_HOLDS, overdraftLimit: e.overdraftLimit, seq: 1, metadata, createdAt: e.at,
    };
  }
  if (state === undefined) throw new Error(`${e.type} applied before Opened`);
  const next = (patch: Partial<AccountState>): AccountState => ({ ...state, ...patch, seq: state.seq + 1 });
  switch (e.type) {
    case 'Frozen': return next({ status: 'frozen' });
    case 'Unfrozen': return next({ status: 'open' });
    case 'Closed': return next({ status: 'closed' });
    case 'Debited': return next({ balance: state.balance - e.amount });
    case 'Credited': return next({ balance: state.balance + e.amount });
    case 'Returned': return next({ balance: state.balance + e.amount });
    case 'RefundDebited': return next({ balance: state.balance - e.amount });
    case 'SentToSuspense': return next({ balance: state.balance - e.amount });
    case 'HoldPlaced':
      return next({
        held: state.held + e.amount,
        holds: { ...state.holds, [e.holdId]: { id: e.holdId, destinationId: e.destinationId, amount: e.amount, remaining: e.amount, multiCapture: e.multiCapture, expiresAt: e.expiresAt } },
      });
    case 'HoldCaptured': {
      const hold = state.holds[e.holdId];
      if (!hold) throw new Error(`capture of unknown hold ${e.holdId}`);
      const remaining = hold.remaining - e.amount - e.released;
      const { [e.holdId]: _gone, ...others } = state.holds;
      return next({
        balance: state.balance - e.amount,
        held: state.held - e.amount - e.released,
        holds: remaining === 0n ? holdsOrNone(others) : { ...others, [e.holdId]: { ...hold, remaining } },
      });
    }
    case 'HoldReleased': {
      const { [e.holdId]: _gone, ...others } = state.holds;
      return next({ held: state.held - e.amount, holds: holdsOrNone(others) });
    }
    case 'CreditRefused': return state;
    case 'Settled': return state;
    default: return assertNever(e);
  }
}

export function assertNever(x: never): never {
  throw new Error(`unexpected variant: ${JSON.stringify(x)}`);
}
