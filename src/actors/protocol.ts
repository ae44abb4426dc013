// What travels to and from an account actor. Cluster concerns (shard, epoch) stay in the
// registry and the write path; a request carries the domain command plus what the write
// needs beside it: the idempotency record and, for a debit, the transfer's outbox row.
import type { AccountCommand, AccountReply, TransferKind } from '../domain/account.ts';
import type { AccountId, TenantId } from '../domain/ids.ts';
import type { ErrorCode, GeopayError } from '../domain/errors.ts';
import type { StoredKey } from '../persistence/journal.ts';

export interface IdempotencyClaim {
  tenantId: string;
  key: string;
  requestHash: string;
  /** The resource the request creates or acts on (account or transfer id). */
  resourceId: string | null;
  /**
   * What the key stores when the command succeeds: a fixed answer, the account's view after
   * the command, or nothing (a replay reads the resource). A rejection always stores its
   * `RejectionAnswer`. Data, not a function, so a request can travel to another node.
   */
  onOk: OkAnswer;
}

export type OkAnswer = null | { status: number; body: unknown } | { status: number; accountView: true };

export interface OutboxTransfer {
  destinationId: AccountId;
  kind: TransferKind;
  tenantId: TenantId | null;
  metadata: Record<string, unknown> | null;
}

/** What the holds row of an Authorize carries beside the domain command. */
export interface HoldRecord {
  tenantId: TenantId | null;
  metadata: Record<string, unknown> | null;
  /** The linked batch group the hold belongs to, if any. */
  groupId?: string;
}

export interface AccountRequest {
  cmd: AccountCommand;
  idem?: IdempotencyClaim;
  /** Present on a Debit, Capture or Refund: the transfer record committed with it. */
  transfer?: OutboxTransfer;
  /** Present on an Authorize. */
  hold?: HoldRecord;
  /** A redelivery (relay): read transfer states and keys before deciding. */
  careful?: boolean;
}

/** A request as the actor holds it: with the caller's resolver and the time it was taken. */
export interface Pending extends AccountRequest { reply: (r: CommandResult) => void; at: string }

/**
 * The answer an idempotency key stores for a business rejection (status and body). The HTTP
 * layer knows what a code looks like on the wire; the actor is given it (ActorDeps).
 */
export type RejectionAnswer = (code: ErrorCode) => { status: number; body: unknown };

/** A cross-region credit leg's outcome at the destination: credited (`refusal` null) or refused. */
export interface LegOutcome { refusal: ErrorCode | null }

export type CommandResult =
  /**
   * `leg`: set on a cross-region Credit, what its source's region settles the transfer by.
   * `settledAt`: set on a domestic Credit that settled its transfer, the row's new updated_at,
   * so a request waiting on another node hears the outcome without reading the row.
   */
  | { type: 'done'; reply: AccountReply; leg?: LegOutcome; settledAt?: string }
  /** The idempotency key was used before; this is what it stored. */
  | { type: 'duplicate'; stored: StoredKey }
  | { type: 'error'; error: GeopayError };
