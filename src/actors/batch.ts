// Sequencing, pure: an account actor's batch of commands decided in order against its state
// with the domain's decide/evolve, and projected to the rows of one write set
// (src/persistence/rows.ts). No I/O: what the batch read and the epoch it writes at come in
// as arguments (flush.ts does the reading and the commit). Tested alone in batch.test.ts.
import type { AccountCommand, AccountEvent, AccountReply, AccountState } from '../domain/account.ts';
import { decide, evolve } from '../domain/account.ts';
import type { AccountId, ShardId, TransferId } from '../domain/ids.ts';
import { regionOf, regionOfTransfer } from '../domain/ids.ts';
import type { ErrorCode } from '../domain/errors.ts';
import { GeopayError } from '../domain/errors.ts';
import { accountView } from '../domain/views.ts';
import type { Prefetched, StoredKey, WriteSet } from '../persistence/journal.ts';
import { keyOf } from '../persistence/journal.ts';
import type { EventRows, IdempotencyRow, WriteRows } from '../persistence/rows.ts';
import { addRows, emptyRows, rowCount, rowsOfEvent } from '../persistence/rows.ts';
import type { Parts } from '../persistence/writer.ts';
import { reportedByServer } from '../persistence/writer.ts';
import type { CommandResult, LegOutcome, OkAnswer, Pending, RejectionAnswer } from './protocol.ts';

/** Everything a batch is planned with besides its commands. */
export interface BatchEnv {
  accountId: AccountId;
  shard: ShardId;
  epoch: bigint;
  nodeId: string;
  snapshotEvery: number;
  /** Whether `known` was read; when not, a redelivery is assumed first and the commit checks it. */
  careful: boolean;
  known: Prefetched;
  rejectionAnswer: RejectionAnswer;
}

/** One command decided: its result and the rows it writes. */
export interface PlannedCommand { result: CommandResult; rows: EventRows[]; idempotency: IdempotencyRow | undefined }

/** The committed state a batch starts from. */
export interface BatchStart { state: AccountState | undefined; lastSnapshotSeq: number }

/**
 * A batch's running context while its commands are planned in order: the state, and what the
 * batch's earlier commands took that the database does not show yet. `plan` updates it.
 */
export class Sequence {
  constructor(
    public state: AccountState | undefined,
    /** Idempotency keys stored by earlier commands of the batch. */
    readonly keys = new Map<string, StoredKey>(),
    /** Credit and return legs the batch has seen (`Credit:<transferId>`, `Return:<transferId>`). */
    readonly legs = new Set<string>(),
    /** What the batch refunded of each original transfer, net of refunds it saw come back. */
    readonly refunds = new Map<string, bigint>(),
    /** The outcomes of the cross-region credit legs the batch decided, by transfer id. */
    readonly inbound = new Map<string, LegOutcome>(),
  ) {}

  clone(): Sequence {
    return new Sequence(this.state, new Map(this.keys), new Set(this.legs), new Map(this.refunds), new Map(this.inbound));
  }

  /** Decides one command after the ones before it, and its rows; updates this sequence. */
  plan(req: Pending, env: BatchEnv): PlannedCommand {
    const k = req.idem ? keyOf(req.idem.tenantId, req.idem.key) : undefined;
    const stored = k === undefined ? undefined : (env.known.keys.get(k) ?? this.keys.get(k)) ?? existingResource(req, env);
    if (stored) return { result: { type: 'duplicate', stored }, rows: [], idempotency: undefined };
    const cmd = this.withBatchKnowledge(req.cmd, env);
    const d = decide(this.state, cmd);
    const source = { accountId: env.accountId, shard: env.shard, at: req.at, transfer: req.transfer, hold: req.hold };
    const rows: EventRows[] = [];
    for (const e of d.events) {
      const before = this.state;
      this.state = evolve(before, e);
      rows.push(rowsOfEvent(e, before, this.state, source));
      if (e.type === 'RefundDebited') this.refunds.set(e.originalId, (this.refunds.get(e.originalId) ?? 0n) + e.amount);
      if (e.type === 'Returned' && e.refundOf) this.refunds.set(e.refundOf, (this.refunds.get(e.refundOf) ?? 0n) - e.amount);
    }
    let idempotency: IdempotencyRow | undefined;
    if (req.idem && k !== undefined) {
      const answer = storedAnswer(req.idem.onOk, d.reply, env.rejectionAnswer);
      idempotency = { tenantId: req.idem.tenantId, key: req.idem.key, requestHash: req.idem.requestHash, resourceId: req.idem.resourceId, statusCode: answer?.status ?? null, response: answer?.body ?? null };
      this.keys.set(k, { requestHash: idempotency.requestHash, resourceId: idempotency.resourceId, statusCode: idempotency.statusCode, response: idempotency.response });
    }
    const leg = this.legOutcome(cmd, d.events, env);
    if (leg) return { result: { type: 'done', reply: d.reply, leg }, rows, idempotency };
    // A domestic credit settles its transfer in this commit, at the command's instant (rowsOfEvent).
    const settled = cmd.type === 'Credit' && d.events.some((e) => e.type === 'Credited');
    return { result: settled ? { type: 'done', reply: d.reply, settledAt: req.at } : { type: 'done', reply: d.reply }, rows, idempotency };
  }

  /**
   * A cross-region credit's outcome, for its source's region to settle the transfer by: what
   * this command decided, or, delivered again, what was decided first (read when careful, or
   * earlier in this batch). Undefined for every other command, and for a credit not decided
   * (the account does not exist here).
   */
  private legOutcome(cmd: AccountCommand, events: readonly AccountEvent[], env: BatchEnv): LegOutcome | undefined {
    if (cmd.type !== 'Credit' || regionOfTransfer(cmd.transferId) === regionOf(env.accountId)) return undefined;
    for (const e of events) {
      const leg: LegOutcome | undefined = e.type === 'Credited' ? { refusal: null } : e.type === 'CreditRefused' ? { refusal: e.reason } : undefined;
      if (leg) {
        this.inbound.set(cmd.transferId, leg);
        return leg;
      }
    }
    const known = env.known.inbound.get(cmd.transferId);
    if (known) return { refusal: known.outcome === 'credited' ? null : (known.refusalCode ?? 'internal_error') as ErrorCode };
    return this.inbound.get(cmd.transferId);
  }

  /**
   * A transfer as this account's database shows it: its row when the transfer is of this
   * account's region, else this account's inbound leg of it, seen as the state it stands for
   * (credited: settled; none yet: still debited).
   */
  private knownTransfer(id: TransferId, env: BatchEnv): { state: string; amount: bigint; refunded: bigint } | undefined {
    if (regionOfTransfer(id) === regionOf(env.accountId)) return env.known.transfers.get(id);
    const leg = env.known.inbound.get(id);
    if (!leg) return undefined;
    return { state: leg.outcome === 'credited' ? 'settled' : 'refused', amount: leg.amount, refunded: leg.refunded };
  }

  private knownState(id: TransferId, env: BatchEnv): string | undefined {
    if (regionOfTransfer(id) === regionOf(env.accountId)) return env.known.transfers.get(id)?.state;
    return env.known.inbound.has(id) ? 'applied' : 'debited';
  }

  /** The command with what the batch knows filled in: whether a leg was applied, what is left to refund. */
  private withBatchKnowledge(cmd: AccountCommand, env: BatchEnv): AccountCommand {
    if (cmd.type === 'Credit' || cmd.type === 'Return' || cmd.type === 'Settle') {
      const expect = cmd.type === 'Return' ? 'refused' : 'debited';
      const leg = `${cmd.type}:${cmd.transferId}`;
      // Not read (optimistic): assume the expected state; the commit checks it.
      const known = env.careful ? this.knownState(cmd.transferId, env) : expect;
      const alreadyApplied = known !== expect || this.legs.has(leg);
      this.legs.add(leg);
      return { ...cmd, alreadyApplied };
    }
    if (cmd.type === 'Refund') {
      // What is left to refund: read when careful, else as the edge read it; the commit
      // takes it only if it is still there (refunded + amount <= amount).
      const orig = env.careful ? this.knownTransfer(cmd.originalId, env) : undefined;
      const left = orig ? (orig.state === 'settled' ? orig.amount - orig.refunded : 0n) : cmd.refundable;
      return { ...cmd, refundable: left - (this.refunds.get(cmd.originalId) ?? 0n) };
    }
    return cmd;
  }
}

/** The transfer or hold a keyed command creates, under the id derived from its request (src/payments/keyed-ids.ts). */
export function keyedCreation(req: Pending): { transferId: string } | { holdId: string } | undefined {
  if (!req.idem) return undefined;
  const { cmd } = req;
  if (cmd.type === 'Debit' || cmd.type === 'Refund' || cmd.type === 'Capture') return { transferId: cmd.transferId };
  if (cmd.type === 'Authorize') return { holdId: cmd.holdId };
  return undefined;
}

/**
 * A keyed command whose transfer or hold exists already, found by a careful read: a retry of
 * the request that made it (the id is derived from the request), whose key is gone (expired)
 * or was not seen. It is a duplicate with no stored answer: the caller reads the resource.
 */
function existingResource(req: Pending, env: BatchEnv): StoredKey | undefined {
  const made = env.careful ? keyedCreation(req) : undefined;
  if (!made || !req.idem) return undefined;
  const exists = 'transferId' in made ? env.known.transfers.has(made.transferId) : env.known.holds?.has(made.holdId) === true;
  if (!exists) return undefined;
  return { requestHash: req.idem.requestHash, resourceId: 'transferId' in made ? made.transferId : made.holdId, statusCode: null, response: null };
}

/**
 * A keyed command that would create a transfer or hold and was refused, decided without reads:
 * perhaps the late retry of one that went through (its key expired, and now the funds or the
 * hold are gone). Worth a careful read before the refusal is stored under its key.
 */
export function refusedKeyedCreation(batch: readonly Pending[], results: readonly CommandResult[]): boolean {
  return results.some((r, i) => r.type === 'done' && !r.reply.ok && keyedCreation(batch[i]!) !== undefined);
}

/** The answer an idempotency key keeps for this reply. */
export function storedAnswer(onOk: OkAnswer, reply: AccountReply, rejectionAnswer: RejectionAnswer): { status: number; body: unknown } | null {
  if (!reply.ok) return rejectionAnswer(reply.code);
  if (onOk === null) return null;
  if ('accountView' in onOk) return { status: onOk.status, body: accountView(reply.state) };
  return onOk;
}

/** A batch planned whole: each command's result, and the one write set (none: nothing to write). */
export interface BatchPlan {
  state: AccountState | undefined;
  results: CommandResult[];
  ws: WriteSet | undefined;
  /** The snapshot seq once `ws` is committed. */
  lastSnapshotSeq: number;
}

export function planBatch(start: BatchStart, batch: readonly Pending[], env: BatchEnv): BatchPlan {
  const sequence = new Sequence(start.state);
  const rows = emptyRows();
  const results: CommandResult[] = [];
  for (const req of batch) {
    const planned = sequence.plan(req, env);
    addCommandRows(rows, planned);
    results.push(planned.result);
  }
  const { ws, lastSnapshotSeq } = writeSetOf(rows, sequence.state, start.lastSnapshotSeq, env);
  return { state: sequence.state, results, ws, lastSnapshotSeq };
}

/** A planned command's rows: its events' rows, then its idempotency key. */
function addCommandRows(target: WriteRows, planned: PlannedCommand): void {
  for (const r of planned.rows) addRows(target, r);
  if (planned.idempotency) target.idempotency.push(planned.idempotency);
}

/** The write set of some rows, with the account's snapshot when `snapshotEvery` postings have passed. */
function writeSetOf(rows: WriteRows, state: AccountState | undefined, lastSnapshotSeq: number, env: BatchEnv): { ws: WriteSet | undefined; lastSnapshotSeq: number } {
  if (rowCount(rows) === 0) return { ws: undefined, lastSnapshotSeq };
  const due = state !== undefined && state.seq - lastSnapshotSeq >= env.snapshotEvery;
  const snapshot = due ? { accountId: env.accountId, seq: state.seq, state } : undefined;
  const ws: WriteSet = { shard: env.shard, epoch: env.epoch, nodeId: env.nodeId, ...rows, snapshot };
  return { ws, lastSnapshotSeq: snapshot ? snapshot.seq : lastSnapshotSeq };
}

/** What a client hears when its command's write failed. */
export function failureFor(err: unknown): GeopayError {
  const code = (err as { code?: string } | null)?.code ?? '';
  // Connection, transaction-rollback, resource and operator classes pass; the rest is a
  // statement PostgreSQL will refuse again, which is our bug or data the edge let through.
  if (reportedByServer(err) && !/^(08|40|53|57|58)/.test(code)) return new GeopayError('internal_error', 'the write was refused', { cause: err });
  return new GeopayError('region_unavailable', 'the write did not complete', { cause: err });
}

/** How a batch redone command by command stands: the state and results so far, and what committed. */
export interface BatchProgress {
  readonly sequence: Sequence;
  readonly lastSnapshotSeq: number;
  readonly results: readonly CommandResult[];
  readonly committed: readonly WriteSet[];
}

/**
 * The batch as parts for the writer (src/persistence/writer.ts): one command each, so that a
 * batch that failed with an error the server reported is redone command by command, and only
 * the command at fault fails.
 * A part is planned after the commands that committed, with what the batch read before.
 */
export function batchParts(start: BatchStart, batch: readonly Pending[], env: BatchEnv, whole: WriteSet): Parts<BatchProgress> {
  return {
    whole,
    count: batch.length,
    start: { sequence: new Sequence(start.state), lastSnapshotSeq: start.lastSnapshotSeq, results: [], committed: [] },
    alone(progress, index) {
      const sequence = progress.sequence.clone();
      const planned = sequence.plan(batch[index]!, env);
      const rows = emptyRows();
      addCommandRows(rows, planned);
      const { ws, lastSnapshotSeq } = writeSetOf(rows, sequence.state, progress.lastSnapshotSeq, env);
      const committed = ws ? [...progress.committed, ws] : progress.committed;
      return { ws, next: { sequence, lastSnapshotSeq, results: [...progress.results, planned.result], committed } };
    },
    failed(progress, _index, err) {
      return { ...progress, results: [...progress.results, { type: 'error', error: failureFor(err) }] };
    },
  };
}
