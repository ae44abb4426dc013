// One actor per account: the single writer of its balance. It queues its commands, commits
// them in batches (per-actor group commit) and replies only after COMMIT; the results of
// async work come back to it as messages. This file is the message handling; the parts it
// sequences are each testable alone: batch.ts (decide a batch, project it to rows), flush.ts
// (reads, the commit, redoing a lost race) and passivation.ts (when to snapshot and stop).
import type { Metrics } from '../observability/metrics.ts';
import type { Logger } from 'pino';
import type { AccountState } from '../domain/account.ts';
import { withSharedEmpties } from '../domain/account.ts';
import type { AccountId, ShardId } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { Pool } from '../persistence/db.ts';
import type { Loaded, WriteSet } from '../persistence/journal.ts';
import { ShardFenced, StaleState, emptyWriteSet, loadAccount, prefetch } from '../persistence/journal.ts';
import type { GroupWriter } from '../persistence/writer.ts';
import type { Ownership } from '../cluster/ownership.ts';
import { failureFor } from './batch.ts';
import type { FlushDeps, FlushOutcome } from './flush.ts';
import { flushBatch } from './flush.ts';
import type { FinishStep, PassivationRequest } from './passivation.ts';
import { afterSnapshot, declinedAtOnce, finishStep, passivationStep } from './passivation.ts';
import type { Pending, RejectionAnswer } from './protocol.ts';
import type { ActorRef } from './nact.ts';
import { tell } from './nact.ts';

export interface Inspection {
  resident: true;
  phase: Phase;
  state: AccountState | undefined;
  pending: number;
  inFlight: number;
  lastSnapshotSeq: number;
  lastActivityAt: string;
}

type ReadReply = (r: { state: AccountState | undefined } | { error: GeopayError }) => void;

export type AccountMsg =
  | { type: 'Command'; req: Pending }
  /** `epoch`: the shard's epoch here when the load began (with every result). */
  | { type: 'Loaded'; result: Loaded | undefined; epoch?: bigint; error?: unknown }
  | { type: 'Flushed'; batch: Pending[]; outcome: FlushOutcome | undefined; error?: unknown }
  | { type: 'Inspect'; reply: (i: Inspection) => void }
  /** The committed state, once loaded. */
  | { type: 'Read'; reply: ReadReply }
  /** Snapshot and stop once idle; `wait` holds the request until the mailbox drains. */
  | { type: 'Passivate'; wait: boolean; done: (passivated: boolean) => void }
  | { type: 'Snapshotted'; seq: number; error?: unknown }
  /** The shard was lost: answer everything held with the error and stop taking commands. */
  | { type: 'Retire'; error: GeopayError };

type Phase = 'loading' | 'ready' | 'snapshotting' | 'retired';

export interface ActorState {
  phase: Phase;
  account: AccountState | undefined;
  lastSnapshotSeq: number;
  pending: Pending[];
  inFlight: Pending[] | null;
  lastActivity: number;
  passivation: PassivationRequest | null;
  readers: ReadReply[];
  /** The shard epoch `account` was loaded under; once the ownership's differs, it is reloaded before use. */
  loadedAt: bigint | undefined;
  /** Reloads in a row to redo a batch decided on a stale state (see MAX_STALE_REDOS). */
  staleRedos: number;
}

/** What the actor reports of itself for the registry to read synchronously. Only the actor writes it. */
export interface ActorActivity {
  /** Commands the actor holds: queued in its state plus the batch in flight. */
  depth: number;
  /** When it last took a command (ms since the epoch). */
  lastActivity: number;
  /** A batch is being committed: its result is still to come back as a message. */
  flushing: boolean;
}

/**
 * What an actor leaves when it goes to rest (registry.ts): idle and holding nothing, it stops,
 * and the next message to the account spawns a new actor from this, ready, with nothing to load.
 */
export type RestingState = Pick<ActorState, 'account' | 'lastSnapshotSeq' | 'loadedAt'>;

/**
 * One per resident account, awake (`ref`) or resting. Each field has one writer:
 * - the registry owns `ref`, `queued`, `retired` and `resting`: it counts the Commands and
 *   Reads it dispatches and counts them down when nact hands them to the handler (registry.ts,
 *   wake), and marks the handle retired when it takes it out of routing; the actor only reads
 *   `queued`;
 * - the actor owns `depth`, `lastActivity` and `flushing`, through its ActorActivity view of
 *   this object (makeAccountHandler); they outlive the actor while the account rests.
 * A class of plain fields, not closures or getters: a million of them may be resident.
 */
export class ActorHandle implements ActorActivity {
  /** The nact actor, while the account has work; undefined while it rests. */
  ref: ActorRef<AccountMsg> | undefined = undefined;
  /** Messages dispatched to nact and not yet handled: nothing may be dropped by a stop. */
  queued = 0;
  retired = false;
  resting: RestingState | undefined = undefined;
  depth = 0;
  flushing = false;

  constructor(readonly id: AccountId, readonly shard: ShardId, public lastActivity: number) {}
}

export interface ActorDeps {
  pool: Pool;
  ownership: Ownership;
  nodeId: string;
  snapshotEvery: number;
  maxBatch: number;
  mailboxLimit: number;
  logger: Logger;
  now: () => number;
  /** Tests only: a pause between deciding and committing (see FAULT_COMMIT_DELAY_MS). */
  faultCommitDelayMs: number;
  /** The node's group-commit writer: a batch goes as parts (one per command), a snapshot alone. */
  writer: Pick<GroupWriter, 'commit' | 'commitParts'>;
  /** The answer an idempotency key stores for a business rejection; the HTTP layer's. */
  rejectionAnswer: RejectionAnswer;
  /** After a commit: the saga's next steps and the waiters of transfers. */
  afterCommit: (ws: WriteSet) => void;
  /** Take this actor out of routing: it answers what it still holds, then stops. */
  retire: (h: ActorHandle) => void;
  metrics: Pick<Metrics, 'batchCommands' | 'fencedWrites'> | undefined;
  /** It is idle and snapshotted: remove and stop it, synchronously. */
  passivated: (h: ActorHandle) => void;
}

export function initialActorState(now: number): ActorState {
  return {
    phase: 'loading', account: undefined, lastSnapshotSeq: 0, pending: [], inFlight: null, lastActivity: now, passivation: null, readers: [],
    loadedAt: undefined, staleRedos: 0,
  };
}

/** The state of an actor woken from rest: ready as it was left, nothing to load. */
export function wokenActorState(r: RestingState, lastActivity: number): ActorState {
  return { ...initialActorState(lastActivity), phase: 'ready', account: r.account, lastSnapshotSeq: r.lastSnapshotSeq, loadedAt: r.loadedAt };
}

/**
 * What the actor may rest with, if it holds nothing and waits for nothing: no command, read or
 * passivation held, no load, commit or snapshot out (their results come back to this actor
 * alone), and no redo counted. The caller also checks that nact holds no message for it.
 */
export function restingStateOf(s: ActorState): RestingState | undefined {
  const idle = s.phase === 'ready' && s.pending.length === 0 && s.inFlight === null && s.passivation === null && s.readers.length === 0;
  if (!idle || s.staleRedos !== 0) return undefined;
  return { account: s.account, lastSnapshotSeq: s.lastSnapshotSeq, loadedAt: s.loadedAt };
}

/** The nact handler of one account's actor; the handle's ActorActivity fields are the actor's to write. */
export function makeAccountHandler(h: ActorHandle, deps: ActorDeps) {
  const actor = new AccountActor(h, h, deps);
  return (s: ActorState, msg: AccountMsg, self: ActorRef<AccountMsg>): ActorState => actor.handle(s, msg, self);
}

/**
 * Starts loading an account's state; the result comes back as a Loaded message. The shard's
 * epoch is read first: what an earlier owner wrote is all in the journal by then (taking the
 * epoch waited for its writes), and a later change of epoch tells the actor to reload.
 */
export function startLoadFor(pool: Pool, id: AccountId, self: ActorRef<AccountMsg>, epochOf: () => Promise<bigint>): void {
  epochOf()
    .then(async (epoch) => tellOwnResult(self, { type: 'Loaded', result: await loadAccount(pool, id), epoch }))
    .catch((error: unknown) => tellOwnResult(self, { type: 'Loaded', result: undefined, error }));
}

/**
 * The result of the actor's own load or snapshot. An actor retired meanwhile may be stopped
 * already (registry.ts, retire): it answered all it held then, and nothing waits for this. No
 * other stop leaves one out (restingStateOf, passivationStep); a commit's result is told
 * plainly, as a retired actor stops only once no commit is out.
 */
function tellOwnResult(self: ActorRef<AccountMsg>, msg: AccountMsg): void {
  if (!self.stopped) tell(self, msg);
}

/** Reloads in a row to redo one batch decided on a stale state; past it the batch is answered as a failed commit. */
export const MAX_STALE_REDOS = 3;

const retiredError = (): GeopayError => new GeopayError('shard_unavailable', 'account actor retired');

class AccountActor {
  private readonly log: Logger;
  private readonly flushDeps: FlushDeps;

  constructor(private readonly h: Readonly<ActorHandle>, private readonly activity: ActorActivity, private readonly deps: ActorDeps) {
    this.log = deps.logger.child({ account: h.id, shard: h.shard });
    this.flushDeps = {
      accountId: h.id, shard: h.shard, nodeId: deps.nodeId, snapshotEvery: deps.snapshotEvery,
      rejectionAnswer: deps.rejectionAnswer, faultCommitDelayMs: deps.faultCommitDelayMs,
      read: (transferIds, keys, holdIds) => prefetch(deps.pool, transferIds, keys, holdIds),
      epoch: () => deps.ownership.epochFor(h.shard),
      writer: deps.writer,
      log: this.log,
    };
  }

  handle(s: ActorState, msg: AccountMsg, self: ActorRef<AccountMsg>): ActorState {
    switch (msg.type) {
      case 'Command': return this.onCommand(s, msg.req, self);
      case 'Loaded': return this.onLoaded(s, msg, self);
      case 'Flushed': return this.onFlushed(s, msg, self);
      case 'Read': return this.onRead(s, msg.reply, self);
      case 'Inspect': return this.onInspect(s, msg.reply);
      case 'Retire':
        if (s.phase === 'retired') return s;
        this.log.warn({ code: msg.error.code, reason: msg.error.message }, 'actor retired: shard lost or handed over');
        return this.retire(s, msg.error);
      case 'Passivate': return this.onPassivate(s, msg, self);
      case 'Snapshotted': return this.onSnapshotted(s, msg, self);
      default: {
        const never: never = msg;
        throw new Error(`unknown message ${JSON.stringify(never)}`);
      }
    }
  }

  private onCommand(s: ActorState, req: Pending, self: ActorRef<AccountMsg>): ActorState {
    this.activity.lastActivity = this.deps.now();
    if (s.phase === 'retired') {
      req.reply({ type: 'error', error: retiredError() });
      return s;
    }
    if (s.pending.length >= this.deps.mailboxLimit) {
      req.reply({ type: 'error', error: new GeopayError('mailbox_full') });
      return s;
    }
    const next = { ...s, pending: [...s.pending, req], lastActivity: this.activity.lastActivity };
    this.activity.depth = next.pending.length + (next.inFlight?.length ?? 0);
    return this.maybeFlush(next, self);
  }

  private onLoaded(s: ActorState, msg: Extract<AccountMsg, { type: 'Loaded' }>, self: ActorRef<AccountMsg>): ActorState {
    // Retired while loading: it answered everything then, and stays out of service.
    if (s.phase === 'retired') return s;
    if (msg.error instanceof GeopayError && msg.error.code === 'shard_unavailable') {
      this.log.warn({ err: msg.error }, 'account not loaded: shard not owned here');
      return this.retire(s, msg.error);
    }
    if (msg.error !== undefined || !msg.result) {
      this.log.error({ err: msg.error }, 'account load failed');
      return this.retire(s, new GeopayError('region_unavailable', 'account could not be loaded', { cause: msg.error }));
    }
    for (const r of s.readers) r({ state: msg.result.state });
    const { state, lastSnapshotSeq } = msg.result;
    const account = state && withSharedEmpties(state);
    return this.maybeFlush({ ...s, phase: 'ready', account, lastSnapshotSeq, readers: [], loadedAt: msg.epoch }, self);
  }

  private onFlushed(s: ActorState, msg: Extract<AccountMsg, { type: 'Flushed' }>, self: ActorRef<AccountMsg>): ActorState {
    this.activity.flushing = false;
    const next: ActorState = { ...s, inFlight: null };
    if (msg.error !== undefined || !msg.outcome) return this.flushFailed(next, msg.batch, msg.error, self);
    const o = msg.outcome;
    msg.batch.forEach((r, i) => r.reply(o.results[i]!));
    for (const ws of o.wss) this.deps.afterCommit(ws);
    this.activity.depth = next.pending.length;
    return this.maybeFlush({ ...next, account: o.state, lastSnapshotSeq: o.lastSnapshotSeq, staleRedos: 0 }, self);
  }

  private flushFailed(s: ActorState, batch: Pending[], err: unknown, self: ActorRef<AccountMsg>): ActorState {
    if (err instanceof StaleState) {
      if (s.phase === 'retired') {
        failAll(batch, retiredError());
        return s;
      }
      if (s.staleRedos < MAX_STALE_REDOS) return this.redoAfterReload(s, batch, err, self);
    }
    if (err instanceof GeopayError && err.code === 'shard_unavailable') {
      // Fenced (another owner took the shard), or not ours any more. Stop at once; the caller retries there.
      this.log.warn({ err }, 'write fenced; retiring actor');
      failAll(batch, err);
      // The epoch the write carried, not the one held now: a write queued before the shard was
      // lost and taken back is fenced by our own new epoch, which must not drop the shard.
      const epoch = err instanceof ShardFenced ? err.epochs.get(this.h.shard) : undefined;
      if (err instanceof ShardFenced) this.deps.metrics?.fencedWrites.inc();
      if (epoch !== undefined) this.deps.ownership.fenced(this.h.shard, epoch);
      return this.retire(s, err);
    }
    // The commit may or may not have happened: answer retryable and reload from the journal.
    this.log.error({ err }, 'batch failed; reloading from the journal');
    failAll(batch, failureFor(err));
    this.reload(self);
    return { ...s, phase: 'loading' };
  }

  /**
   * The state is older than the journal (the shard changed hands under it, or the journal has
   * the seq it took): nothing of the batch is answered yet; it goes back to the front of the
   * queue, careful (a part of it may have committed before the collision, and its key then
   * answers it as a duplicate), and is decided again on the reloaded state.
   */
  private redoAfterReload(s: ActorState, batch: Pending[], err: StaleState, self: ActorRef<AccountMsg>): ActorState {
    this.log.info({ err, loadedAt: s.loadedAt?.toString() }, 'actor state older than the journal; reloading to redo its batch');
    this.reload(self);
    const again = batch.map((r) => ({ ...r, careful: true }));
    return { ...s, phase: 'loading', pending: [...again, ...s.pending], staleRedos: s.staleRedos + 1 };
  }

  private reload(self: ActorRef<AccountMsg>): void {
    startLoadFor(this.deps.pool, this.h.id, self, this.flushDeps.epoch);
  }

  /** Loaded under another epoch than the one the shard is held at here now. */
  private loadedUnderAnotherEpoch(s: ActorState): boolean {
    const now = this.deps.ownership.info(this.h.shard)?.epoch;
    return now !== undefined && now !== s.loadedAt;
  }

  private onRead(s: ActorState, reply: ReadReply, self: ActorRef<AccountMsg>): ActorState {
    if (s.phase === 'ready' && s.inFlight === null && this.loadedUnderAnotherEpoch(s)) {
      // Memory from an earlier take of the shard: answer from the journal as it is now.
      this.reload(self);
      return { ...s, phase: 'loading', readers: [...s.readers, reply] };
    }
    if (s.phase === 'retired') reply({ error: retiredError() });
    else if (s.phase === 'loading') return { ...s, readers: [...s.readers, reply] };
    else reply({ state: s.account });
    return s;
  }

  private onInspect(s: ActorState, reply: (i: Inspection) => void): ActorState {
    reply({
      resident: true, phase: s.phase, state: s.account, pending: s.pending.length, inFlight: s.inFlight?.length ?? 0,
      lastSnapshotSeq: s.lastSnapshotSeq, lastActivityAt: new Date(s.lastActivity).toISOString(),
    });
    return s;
  }

  private onPassivate(s: ActorState, msg: Extract<AccountMsg, { type: 'Passivate' }>, self: ActorRef<AccountMsg>): ActorState {
    if (declinedAtOnce(s, msg.wait, this.h.queued)) {
      msg.done(false);
      return s;
    }
    return this.passivateIfAsked({ ...s, passivation: { wait: msg.wait, done: msg.done } }, self);
  }

  private onSnapshotted(s: ActorState, msg: Extract<AccountMsg, { type: 'Snapshotted' }>, self: ActorRef<AccountMsg>): ActorState {
    // Retired while the snapshot was out: it stays retired (its successor loads the snapshot).
    if (s.phase === 'retired') return s;
    if (msg.error !== undefined) {
      this.log.warn({ err: msg.error }, 'snapshot failed');
      s.passivation?.done(false);
      return this.maybeFlush({ ...s, phase: 'ready', passivation: null }, self);
    }
    const next: ActorState = { ...s, phase: 'ready', lastSnapshotSeq: Math.max(s.lastSnapshotSeq, msg.seq) };
    const step = afterSnapshot(next);
    if (step.type === 'finish') return next.passivation ? this.finish(next, next.passivation) : next;
    if (!step.decline) return this.maybeFlush(next, self);
    next.passivation?.done(false);
    return this.maybeFlush({ ...next, passivation: null }, self);
  }

  /** With nothing in flight: commit the next batch, or, with nothing pending, go on passivating. */
  private maybeFlush(s: ActorState, self: ActorRef<AccountMsg>): ActorState {
    if (s.phase !== 'ready' || s.inFlight !== null) return s;
    if (s.pending.length === 0) return this.passivateIfAsked(s, self);
    const batch = s.pending.slice(0, this.deps.maxBatch);
    const rest = s.pending.slice(batch.length);
    this.deps.metrics?.batchCommands.observe(batch.length);
    flushBatch(this.flushDeps, { state: s.account, lastSnapshotSeq: s.lastSnapshotSeq, loadedAt: s.loadedAt }, batch).then(
      (outcome) => tell(self, { type: 'Flushed', batch, outcome }),
      (error) => tell(self, { type: 'Flushed', batch, outcome: undefined, error }),
    );
    this.activity.flushing = true;
    return { ...s, pending: rest, inFlight: batch };
  }

  /** Carries out the next step of a held Passivate request, if there is one. */
  private passivateIfAsked(s: ActorState, self: ActorRef<AccountMsg>): ActorState {
    const request = s.passivation;
    if (request === null) return s;
    const step = passivationStep(s, this.h.queued);
    switch (step.type) {
      case 'none': return s;
      case 'snapshot': {
        const { ownership, writer, nodeId } = this.deps;
        const { seq, state } = step;
        ownership.epochFor(this.h.shard)
          .then((epoch) => writer.commit({ ...emptyWriteSet(this.h.shard, epoch, nodeId), snapshot: { accountId: this.h.id, seq, state } }))
          .then(() => tellOwnResult(self, { type: 'Snapshotted', seq }), (error) => tellOwnResult(self, { type: 'Snapshotted', seq, error }));
        return { ...s, phase: 'snapshotting' };
      }
      case 'stop':
      case 'decline':
      case 'wait':
        return this.carryOut(s, request, step);
      default: {
        const never: never = step;
        throw new Error(`unknown passivation step ${JSON.stringify(never)}`);
      }
    }
  }

  private finish(s: ActorState, request: PassivationRequest): ActorState {
    return this.carryOut(s, request, finishStep(request, s.pending.length, this.h.queued));
  }

  private carryOut(s: ActorState, request: PassivationRequest, step: FinishStep): ActorState {
    switch (step.type) {
      case 'wait': return s;
      case 'decline':
        request.done(false);
        return { ...s, passivation: null };
      case 'stop':
        request.done(true);
        this.deps.passivated(this.h);
        return { ...s, passivation: null, phase: 'retired' };
      default: {
        const never: never = step;
        throw new Error(`unknown passivation step ${JSON.stringify(never)}`);
      }
    }
  }

  private retire(s: ActorState, error: GeopayError): ActorState {
    failAll(s.pending, error);
    for (const r of s.readers) r({ error });
    s.passivation?.done(false);
    this.deps.retire(this.h);
    return { ...s, phase: 'retired', pending: [], passivation: null, readers: [] };
  }
}

function failAll(reqs: readonly Pending[], error: GeopayError): void {
  for (const r of reqs) r.reply({ type: 'error', error });
}
