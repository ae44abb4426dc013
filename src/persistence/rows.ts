// The rows of a commit, both ways: the projection of an account's events to the rows its write
// set carries (the ledger events among them, derived from those rows), and the reverse that
// recovery replays (a journal posting back to its event). Both are pure and sit side by side
// so that a change to one meets the other; rows.test.ts checks each event kind and that
// projecting then reading back gives the same state.
import type { AccountEvent, AccountKind, AccountState, JournalKind, TransferKind } from '../domain/account.ts';
import { assertNever, heldDelta, journalKind, signedAmount } from '../domain/account.ts';
import { invariant } from '../domain/assert.ts';
import type { AccountId, HoldId, Region, TenantId, TransferId } from '../domain/ids.ts';
import { regionOfTransfer } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import type { HoldView, TransferView } from '../domain/views.ts';
import type { PostingView } from './queries.ts';

export interface JournalRow {
  accountId: AccountId;
  seq: number;
  kind: JournalKind;
  transferId: TransferId | null;
  amount: bigint;
  balanceAfter: bigint;
  holdId: HoldId | null;
  heldDelta: bigint;
  heldAfter: bigint;
  at: string;
}

export interface NewAccountRow {
  id: AccountId; tenantId: TenantId | null; kind: AccountKind; currency: Currency;
  region: Region; shard: string; overdraftLimit: bigint; metadata: Record<string, unknown>; at: string;
}

export interface NewTransferRow {
  id: TransferId; tenantId: TenantId | null; kind: TransferKind;
  sourceId: AccountId; destinationId: AccountId; amount: bigint; currency: Currency;
  metadata: Record<string, unknown> | null; at: string; holdId: HoldId | null; refundOf: TransferId | null;
}

export interface NewHoldRow {
  id: HoldId; tenantId: TenantId | null; sourceId: AccountId; destinationId: AccountId; amount: bigint; currency: Currency;
  multiCapture: boolean; expiresAt: string; metadata: Record<string, unknown> | null; at: string; groupId: string | null;
}

export type HoldRowState = 'held' | 'captured' | 'voided' | 'expired';

export interface HoldUpdate { id: HoldId; captured: bigint; state: HoldRowState; at: string }

/**
 * Takes `amount` of a settled transfer's refundable rest; the commit fails if it is not there.
 * A negative amount gives a claim back: a refund that came back returned refunded nothing.
 */
export interface RefundClaim {
  originalId: TransferId; amount: bigint;
  /**
   * Where the claim is kept: the original's transfer row when it lives in this account's
   * region, else this account's inbound leg of it (the original's row is another region's).
   */
  on: 'transfer' | 'inbound';
}

/**
 * A cross-region transfer's leg as the destination's region committed it: credited, or
 * refused with its code. Once per transfer (its primary key), so a redelivered leg is
 * answered with the outcome committed first; a refund of the transfer claims against it.
 */
export interface InboundLegRow {
  transferId: TransferId; accountId: AccountId; outcome: 'credited' | 'refused'; refusalCode: string | null;
  amount: bigint; currency: string; at: string;
}

export interface TransferUpdate {
  id: TransferId;
  from: 'debited' | 'refused';
  to: 'settled' | 'refused' | 'returned';
  refusalCode: string | null;
  at: string;
}

export interface IdempotencyRow {
  tenantId: string; key: string; requestHash: string; resourceId: string | null;
  statusCode: number | null; response: unknown;
}

/** The kinds of ledger event (migration 013, docs/api.md "Events"). */
export type LedgerEventType =
  | 'posting.created'
  | 'transfer.debited' | 'transfer.settled' | 'transfer.refused' | 'transfer.returned'
  | 'hold.authorized' | 'hold.captured' | 'hold.voided' | 'hold.expired';

/** A posting as its event shows it: the statement's posting, with its account and currency. */
export interface PostingEventView extends PostingView { accountId: string; currency: string }

/**
 * What an event shows. Known whole when the commit creates the row (a posting, a new transfer
 * or hold). A row the commit moves is shown by the statement as it leaves it: a transfer's
 * row (one state change per transfer per commit), or a hold's with this event's captured
 * amount and state (a commit writes a hold row once, its last state: addRows).
 */
export type EventPayload =
  | { of: 'view'; view: PostingEventView | TransferView | HoldView }
  | { of: 'transfer'; id: TransferId }
  | { of: 'hold'; id: HoldId; captured: bigint; state: HoldRowState };

/**
 * A ledger event, an outbox row of the commit that makes the change. It belongs to the account
 * whose actor committed it, and is numbered after that account's last event by the statement
 * (journal.ts), in the order the events come here.
 */
export interface EventRow {
  accountId: AccountId;
  /** The tenant shown the event: a customer account's; null for the ledger's own (external, suspense). */
  tenantId: TenantId | null;
  type: LedgerEventType;
  /** The account's journal seq after the event: its posting's, or the last posting's for an event that posts nothing. */
  seq: number;
  payload: EventPayload;
  at: string;
}

/** The rows one commit writes: a write set without its fence and its snapshot. */
export interface WriteRows {
  accounts: NewAccountRow[];
  journal: JournalRow[];
  newTransfers: NewTransferRow[];
  transferUpdates: TransferUpdate[];
  idempotency: IdempotencyRow[];
  newHolds: NewHoldRow[];
  holdUpdates: HoldUpdate[];
  refundClaims: RefundClaim[];
  inboundLegs: InboundLegRow[];
  /** In the order the account's actor committed them. */
  events: EventRow[];
}

export function emptyRows(): WriteRows {
  return { accounts: [], journal: [], newTransfers: [], transferUpdates: [], idempotency: [], newHolds: [], holdUpdates: [], refundClaims: [], inboundLegs: [], events: [] };
}

/** How many rows a commit would write; zero means there is nothing to commit. */
export function rowCount(r: WriteRows): number {
  return r.accounts.length + r.journal.length + r.newTransfers.length + r.transferUpdates.length + r.idempotency.length
    + r.newHolds.length + r.holdUpdates.length + r.refundClaims.length + r.inboundLegs.length + r.events.length;
}

/** What the request carried beside its command: the fields of the rows its events create. */
export interface EventSource {
  accountId: AccountId;
  shard: string;
  /** When the command was taken: the rows' timestamps. */
  at: string;
  /** Present on a Debit, Capture or Refund: the transfer row's own fields. */
  transfer: { tenantId: TenantId | null; kind: TransferKind; destinationId: AccountId; metadata: Record<string, unknown> | null } | undefined;
  /** Present on an Authorize: the hold row's own fields. */
  hold: { tenantId: TenantId | null; metadata: Record<string, unknown> | null; groupId?: string } | undefined;
}

/** The rows of one event: at most one of each kind. */
export interface EventRows {
  journal?: JournalRow;
  account?: NewAccountRow;
  newTransfer?: NewTransferRow;
  transferUpdate?: TransferUpdate;
  newHold?: NewHoldRow;
  holdUpdate?: HoldUpdate;
  refundClaim?: RefundClaim;
  inboundLeg?: InboundLegRow;
  /** The event's ledger events: its posting's, then those of the hold and transfer rows it writes. */
  events?: EventRow[];
}

/** Is this transfer's row in another region's database than the account's? Its legs here are inbound legs. */
export function crossRegion(transferId: TransferId, account: AccountState): boolean {
  return regionOfTransfer(transferId) !== account.region;
}

/**
 * The rows an event writes, from the account's state just before and just after it. Every
 * journaled event is one posting with the next seq; the others move a transfer or a hold row.
 */
export function rowsOfEvent(e: AccountEvent, before: AccountState | undefined, after: AccountState, src: EventSource): EventRows {
  const kind = journalKind(e);
  const side = sideRowsOf(e, before, after, src);
  const rows: EventRows = kind === undefined ? side : {
    journal: {
      accountId: src.accountId, seq: after.seq, kind, transferId: 'transferId' in e ? e.transferId : null,
      amount: signedAmount(e), balanceAfter: after.balance, holdId: 'holdId' in e ? e.holdId : null,
      heldDelta: heldDelta(e), heldAfter: after.held, at: src.at,
    },
    ...side,
  };
  const events = eventsOfRows(rows, after, src);
  return events.length > 0 ? { ...rows, events } : rows;
}

/** What each hold row state an update leaves says happened: only a partial capture leaves a hold held. */
const HOLD_EVENT: Record<HoldRowState, LedgerEventType> = { held: 'hold.captured', captured: 'hold.captured', voided: 'hold.voided', expired: 'hold.expired' };

/**
 * The ledger events of an event's rows, derived from the rows alone: a posting, a new hold or
 * transfer, a hold or transfer row moved. An inbound leg is not an event of its own: a credited
 * leg is its posting, and the transfer's state is the source region's to move (a Settle), which
 * is the event. A refund's claim on its original moves no state either.
 */
export function eventsOfRows(r: EventRows, after: AccountState, src: EventSource): EventRow[] {
  const base = { accountId: src.accountId, tenantId: after.kind === 'customer' ? after.tenantId : null, seq: after.seq, at: src.at };
  const out: EventRow[] = [];
  if (r.journal) out.push({ ...base, type: 'posting.created', payload: { of: 'view', view: postingEventView(r.journal, after.currency) } });
  if (r.newHold) out.push({ ...base, type: 'hold.authorized', payload: { of: 'view', view: newHoldView(r.newHold) } });
  if (r.holdUpdate) {
    const { id, captured, state } = r.holdUpdate;
    out.push({ ...base, type: HOLD_EVENT[state], payload: { of: 'hold', id, captured, state } });
  }
  if (r.newTransfer) out.push({ ...base, type: 'transfer.debited', payload: { of: 'view', view: newTransferView(r.newTransfer) } });
  if (r.transferUpdate) out.push({ ...base, type: `transfer.${r.transferUpdate.to}`, payload: { of: 'transfer', id: r.transferUpdate.id } });
  return out;
}

/** Times as the API shows them (Date#toISOString), whatever ISO 8601 form they came in. */
const iso = (at: string): string => new Date(at).toISOString();

/** A posting as the statement shows it (queries.ts), with its account and currency. */
export function postingEventView(r: JournalRow, currency: Currency): PostingEventView {
  return {
    accountId: r.accountId, seq: r.seq, kind: r.kind, amount: r.amount.toString(), balanceAfter: r.balanceAfter.toString(),
    transferId: r.transferId, holdId: r.holdId, heldAfter: r.heldAfter.toString(), currency, createdAt: iso(r.at),
  };
}

/** A transfer as GET /v1/transfers/:id shows it the moment its row is written: debited, nothing refunded. */
export function newTransferView(t: NewTransferRow): TransferView {
  return {
    id: t.id, kind: t.kind, sourceAccountId: t.sourceId, destinationAccountId: t.destinationId, amount: t.amount.toString(),
    currency: t.currency, state: 'debited', refusalCode: null, metadata: t.metadata, holdId: t.holdId, refundOf: t.refundOf,
    refunded: '0', createdAt: iso(t.at), updatedAt: iso(t.at),
  };
}

/** A hold as GET /v1/holds/:id shows it the moment its row is written: held, nothing captured. */
export function newHoldView(h: NewHoldRow): HoldView {
  return {
    id: h.id, sourceAccountId: h.sourceId, destinationAccountId: h.destinationId, amount: h.amount.toString(), captured: '0',
    remaining: h.amount.toString(), currency: h.currency, multiCapture: h.multiCapture, state: 'held', expiresAt: iso(h.expiresAt),
    metadata: h.metadata, createdAt: iso(h.at), updatedAt: iso(h.at),
  };
}

/** The rows beside the posting: the account, transfer and hold rows an event creates or moves. */
function sideRowsOf(e: AccountEvent, before: AccountState | undefined, after: AccountState, src: EventSource): EventRows {
  const { accountId: sourceId, at } = src;
  switch (e.type) {
    case 'Opened':
      return { account: { id: e.id, tenantId: e.tenantId, kind: e.kind, currency: e.currency, region: e.region, shard: src.shard, overdraftLimit: e.overdraftLimit, metadata: e.metadata, at: e.at } };
    case 'Debited': {
      const t = src.transfer;
      invariant(t !== undefined, 'a Debit without its transfer record');
      return { newTransfer: { id: e.transferId, tenantId: t.tenantId, kind: t.kind, sourceId, destinationId: t.destinationId, amount: e.amount, currency: after.currency, metadata: t.metadata, at, holdId: null, refundOf: null } };
    }
    case 'RefundDebited': {
      const t = src.transfer;
      invariant(t !== undefined, 'a Refund without its transfer record');
      return {
        newTransfer: { id: e.transferId, tenantId: t.tenantId, kind: 'refund', sourceId, destinationId: t.destinationId, amount: e.amount, currency: after.currency, metadata: t.metadata, at, holdId: null, refundOf: e.originalId },
        refundClaim: { originalId: e.originalId, amount: e.amount, on: crossRegion(e.originalId, after) ? 'inbound' : 'transfer' },
      };
    }
    case 'HoldPlaced':
      return {
        newHold: {
          id: e.holdId, tenantId: src.hold?.tenantId ?? null, sourceId, destinationId: e.destinationId, amount: e.amount, currency: after.currency,
          multiCapture: e.multiCapture, expiresAt: e.expiresAt, metadata: src.hold?.metadata ?? null, at, groupId: src.hold?.groupId ?? null,
        },
      };
    case 'HoldCaptured': {
      const hold = before?.holds[e.holdId];
      invariant(hold !== undefined, 'a capture of a hold the account does not hold');
      const t = src.transfer;
      return {
        newTransfer: { id: e.transferId, tenantId: t?.tenantId ?? null, kind: 'capture', sourceId, destinationId: e.destinationId, amount: e.amount, currency: after.currency, metadata: t?.metadata ?? null, at, holdId: e.holdId, refundOf: null },
        holdUpdate: { id: e.holdId, captured: hold.amount - hold.remaining + e.amount, state: after.holds[e.holdId] ? 'held' : 'captured', at },
      };
    }
    case 'HoldReleased': {
      const hold = before?.holds[e.holdId];
      invariant(hold !== undefined, 'a release of a hold the account does not hold');
      return { holdUpdate: { id: e.holdId, captured: hold.amount - hold.remaining, state: e.reason, at } };
    }
    // A leg of a transfer from another region is kept here as an inbound leg; its source's
    // region moves the transfer row when the outcome comes back (a Settle).
    case 'Credited':
      if (crossRegion(e.transferId, after)) return { inboundLeg: { transferId: e.transferId, accountId: sourceId, outcome: 'credited', refusalCode: null, amount: e.amount, currency: after.currency, at } };
      return { transferUpdate: { id: e.transferId, from: 'debited', to: 'settled', refusalCode: null, at } };
    case 'CreditRefused':
      // The amount of a refused leg is not known here (nothing was posted): 0 stands for it.
      if (crossRegion(e.transferId, after)) return { inboundLeg: { transferId: e.transferId, accountId: sourceId, outcome: 'refused', refusalCode: e.reason, amount: 0n, currency: after.currency, at } };
      return { transferUpdate: { id: e.transferId, from: 'debited', to: 'refused', refusalCode: e.reason, at } };
    case 'Settled':
      return { transferUpdate: { id: e.transferId, from: 'debited', to: 'settled', refusalCode: null, at } };
    case 'Returned': {
      const transferUpdate: TransferUpdate = { id: e.transferId, from: 'refused', to: 'returned', refusalCode: null, at };
      return e.refundOf ? { transferUpdate, refundClaim: { originalId: e.refundOf, amount: -e.amount, on: crossRegion(e.refundOf, after) ? 'inbound' : 'transfer' } } : { transferUpdate };
    }
    case 'SentToSuspense':
      invariant(after.tenantId !== null, 'money for suspense from an account without a tenant');
      return {
        newTransfer: {
          id: e.transferId, tenantId: after.tenantId, kind: 'suspense', sourceId, destinationId: e.destinationId, amount: e.amount, currency: after.currency,
          metadata: { reason: 'account_closed', returnedTransferId: e.returnedId }, at, holdId: null, refundOf: null,
        },
      };
    case 'Frozen':
    case 'Unfrozen':
    case 'Closed':
      return {};
    default:
      return assertNever(e);
  }
}

/**
 * Adds an event's rows to a commit's. A hold keeps one update per commit, its last (the
 * statement updates each hold row once), in the place of its first.
 */
export function addRows(target: WriteRows, r: EventRows): void {
  if (r.journal) target.journal.push(r.journal);
  if (r.account) target.accounts.push(r.account);
  if (r.newTransfer) target.newTransfers.push(r.newTransfer);
  if (r.transferUpdate) target.transferUpdates.push(r.transferUpdate);
  if (r.newHold) target.newHolds.push(r.newHold);
  if (r.refundClaim) target.refundClaims.push(r.refundClaim);
  if (r.inboundLeg) target.inboundLegs.push(r.inboundLeg);
  if (r.events) target.events.push(...r.events);
  if (r.holdUpdate) {
    const update = r.holdUpdate;
    const i = target.holdUpdates.findIndex((u) => u.id === update.id);
    if (i >= 0) target.holdUpdates[i] = update;
    else target.holdUpdates.push(update);
  }
}

// The reverse: recovery reads postings back as events.

/** An account row as recovery reads it back. */
export interface StoredAccount {
  kind: AccountKind; tenantId: TenantId | null; currency: Currency; region: Region;
  overdraftLimit: bigint; metadata: Record<string, unknown>; at: string;
}

/** A hold row as recovery reads it back: what the hold's postings do not carry. */
export interface StoredHold { destinationId: AccountId; multiCapture: boolean; expiresAt: string; state: string }

/**
 * The event a posting records. A refund's debit reads back as a plain debit (the journal keeps
 * the money's move; the refund link is on the transfer row), which evolves to the same state.
 */
export function eventOfRow(r: JournalRow, account: StoredAccount | undefined, holds: ReadonlyMap<string, StoredHold>): AccountEvent {
  const id = r.accountId;
  const transferId = r.transferId as TransferId;
  const holdId = r.holdId as HoldId;
  const hold = (): StoredHold => {
    const h = holds.get(holdId);
    if (!h) throw new Error(`hold ${holdId} of ${id} missing at seq ${r.seq}`);
    return h;
  };
  switch (r.kind) {
    case 'open':
      if (!account) throw new Error(`account row missing for ${id}`);
      return {
        type: 'Opened', id, kind: account.kind, tenantId: account.tenantId, currency: account.currency,
        region: account.region, overdraftLimit: account.overdraftLimit, metadata: account.metadata, at: account.at,
      };
    case 'freeze': return { type: 'Frozen' };
    case 'unfreeze': return { type: 'Unfrozen' };
    case 'close': return { type: 'Closed' };
    case 'debit': return { type: 'Debited', transferId, amount: -r.amount };
    case 'credit': return { type: 'Credited', transferId, amount: r.amount };
    case 'return': return { type: 'Returned', transferId, amount: r.amount };
    case 'hold': {
      const h = hold();
      return { type: 'HoldPlaced', holdId, destinationId: h.destinationId, amount: r.heldDelta, multiCapture: h.multiCapture, expiresAt: h.expiresAt };
    }
    case 'capture':
      return { type: 'HoldCaptured', holdId, transferId, destinationId: hold().destinationId, amount: -r.amount, released: -r.heldDelta + r.amount };
    case 'release':
      return { type: 'HoldReleased', holdId, amount: -r.heldDelta, reason: hold().state === 'expired' ? 'expired' : 'voided' };
    default: {
      // Read from the database, so not only a compile-time impossibility.
      const unknownKind: never = r.kind;
      throw new Error(`unknown journal kind ${String(unknownKind)}`);
    }
  }
}
