// The node's account actors: spawned on demand, routed to by id (here, or forwarded to the
// shard's owner), passivated when idle, and drained at shutdown. What follows a commit (the
// saga's next leg) is not decided here: every committed write set goes to `onCommitted`.
import type { Metrics } from '../observability/metrics.ts';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { AccountId, Region, ShardId, TransferId } from '../domain/ids.ts';
import { makeTransferId, regionOf, shardOf, shardParts, uuidv7Hex } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { ErrorCode } from '../domain/errors.ts';
import type { Currency } from '../domain/money.ts';
import type { AccountCommand, AccountState } from '../domain/account.ts';
import type { Pool } from '../persistence/db.ts';
import type { WriteSet } from '../persistence/journal.ts';
import type { GroupWriter } from '../persistence/writer.ts';
import type { Ownership, Route } from '../cluster/ownership.ts';
import type { ActorRef, ActorSystem } from './nact.ts';
import { ask, spawn, startSystem, stopActor, stopSystem, tell } from './nact.ts';
import type { AccountMsg, ActorDeps, ActorState, Inspection } from './account-actor.ts';
import { ActorHandle, initialActorState, makeAccountHandler, restingStateOf, startLoadFor, wokenActorState } from './account-actor.ts';
import type { PassivationRequest } from './passivation.ts';
import { restingStep } from './passivation.ts';
import type { AccountRequest, CommandResult, LegOutcome } from './protocol.ts';
import { LedgerAccounts } from './ledger-accounts.ts';
import type { TraceContext } from '../observability/trace.ts';

export interface RegistryConfig {
  nodeId: string;
  shardBuckets: number;
  snapshotEvery: number;
  maxBatch: number;
  mailboxLimit: number;
  askTimeoutMs: number;
  actorIdleMs: number;
  maxResidentActors: number;
  faultCommitDelayMs: number;
}

/** Carries requests to the node that owns a shard (cluster mode); src/cluster/forward.ts. */
export interface RemoteOwners {
  /** `trace`: the request's, carried to the owner as a traceparent header. */
  send(url: string, id: AccountId, req: AccountRequest, at: string, hops: number, trace?: TraceContext): Promise<CommandResult>;
  read(url: string, id: AccountId, hops: number, trace?: TraceContext): Promise<{ state: unknown } | { error: GeopayError }>;
}

/** How a request reaches its actor; `trace`: the request's, carried to another node and to the saga's next leg. */
export interface SendOptions { timeoutMs?: number; at?: string; hops?: number; trace?: TraceContext | undefined }

/** Where an account of a region is loaded from and written to: its region's database. */
export interface RegionStores {
  of(region: Region): { pool: Pool; writer: GroupWriter };
}

/** A transfer's credit leg, as the saga and the relay deliver it. */
export interface CreditLeg { id: TransferId; sourceId: AccountId; destinationId: AccountId; amount: bigint; currency: Currency }

/**
 * The owner a forward went to could not be reached, did not answer in time, or would not take
 * it (it owns the shard no more, or not yet): whoever routed there should look the owner up
 * again rather than trust what it remembered.
 */
const isRouteFailure = (e: GeopayError): boolean => e.code === 'shard_unavailable' || e.code === 'request_timeout';

/** Told of every committed write set, after COMMIT, in commit order per actor. */
export type CommitListener = (ws: WriteSet) => void;

export class AccountRegistry {
  private readonly system: ActorSystem;
  /** Every resident account, its actor awake or at rest (see restIfIdle). */
  private readonly actors = new Map<AccountId, ActorHandle>();
  private readonly shards = new Map<ShardId, ShardId>();
  private readonly deps = new Map<Region, ActorDeps>();
  private generation = 0;
  private draining = false;
  private readonly listeners: CommitListener[] = [];
  private idleTimer: NodeJS.Timeout | undefined;
  /** Opens an external or suspense account before the first money lands in it. */
  private readonly ledger = new LedgerAccounts((id, cmd) => this.send(id, { cmd }), () => this.clock());
  /**
   * The trace of each command that moves a transfer's money, from when it is sent to the
   * actor until its reply: the actor tells afterCommit before it replies, so the saga finds
   * here the trace its next leg continues (traceOf). Bounded by the commands in flight.
   */
  private readonly legTraces = new Map<TransferId, TraceContext>();
  /** Commits since start; tests count transactions with it. */
  commits = 0;
  /** The stored answer of a business rejection (status and problem body), given by the HTTP layer. */
  rejectionAnswer: (code: ErrorCode) => { status: number; body: unknown } = (code) => ({ status: 422, body: { code } });

  constructor(
    /** Each region's database and writer: an account is loaded from and written to its own region's. */
    private readonly stores: RegionStores,
    private readonly ownership: Ownership,
    private readonly cfg: RegistryConfig,
    private readonly logger: Logger,
    /** Business time (command `at`, hold expiry); tests control it. */
    private readonly clock: () => number = Date.now,
    /** Carries requests for shards owned elsewhere (cluster mode only). */
    private readonly forwarder?: RemoteOwners,
    private readonly metrics?: Pick<Metrics, 'mailboxDepth' | 'batchCommands' | 'fencedWrites'>,
  ) {
    this.system = startSystem(`geopay-${cfg.nodeId}-${process.pid}-${Date.now()}`);
    const every = Math.max(10, Math.floor(cfg.actorIdleMs / 2));
    this.idleTimer = setInterval(() => this.passivateIdle(), every);
    this.idleTimer.unref();
  }

  shardOf(id: AccountId): ShardId {
    return shardOf(id, this.cfg.shardBuckets);
  }

  /** Sends a request to the account's actor and waits for its reply (bounded). */
  send(id: AccountId, req: AccountRequest, opts: SendOptions = {}): Promise<CommandResult> {
    if (this.draining) return Promise.resolve({ type: 'error', error: new GeopayError('draining') });
    const shard = this.shardOf(id);
    return this.ownership.route(shard).then((r) => this.sendVia(r, shard, id, req, opts));
  }

  private sendVia(route: Route, shard: ShardId, id: AccountId, req: AccountRequest, opts: SendOptions): Promise<CommandResult> {
    const at = opts.at ?? new Date(this.clock()).toISOString();
    if (route.kind === 'unavailable') return Promise.resolve({ type: 'error', error: new GeopayError('shard_unavailable', route.reason) });
    if (route.kind === 'remote') {
      if (!this.forwarder) return Promise.resolve({ type: 'error', error: new GeopayError('shard_unavailable', 'owned by another node') });
      return this.forwarder.send(route.url, id, req, at, opts.hops ?? 0, opts.trace).then((r) => {
        if (r.type === 'error' && isRouteFailure(r.error)) this.ownership.forget(shard);
        return r;
      });
    }
    return this.sendLocal(id, req, at, opts.timeoutMs, opts.trace);
  }

  private sendLocal(id: AccountId, req: AccountRequest, at: string, timeoutMs: number | undefined, trace: TraceContext | undefined): Promise<CommandResult> {
    const h = this.handleFor(id);
    this.metrics?.mailboxDepth.observe(h.queued + h.depth);
    h.queued++;
    const forgetTrace = trace && this.keepLegTrace(req.cmd, trace);
    const answered = ask<AccountMsg, CommandResult>(this.wake(h), (reply) => ({ type: 'Command', req: { ...req, reply, at } }), timeoutMs ?? this.cfg.askTimeoutMs)
      .catch((error: unknown): CommandResult => ({ type: 'error', error: error instanceof GeopayError ? error : new GeopayError('internal_error', undefined, { cause: error }) }));
    if (!forgetTrace) return answered;
    return answered.then((r) => {
      forgetTrace();
      return r;
    });
  }

  /** Remembers the request's trace for the transfer a command moves, if it moves one (see legTraces); the result forgets it. */
  private keepLegTrace(cmd: AccountCommand, trace: TraceContext): (() => void) | undefined {
    if (!('transferId' in cmd)) return undefined;
    const id = cmd.transferId;
    this.legTraces.set(id, trace);
    return () => {
      if (this.legTraces.get(id) === trace) this.legTraces.delete(id);
    };
  }

  /** The trace of the request whose command for this transfer is being committed now, if it had one. */
  traceOf(id: TransferId): TraceContext | undefined {
    return this.legTraces.get(id);
  }

  /** Is the account's shard owned and writable here right now? */
  isLocal(id: AccountId): boolean {
    return this.ownership.isLocal(this.shardOf(id));
  }

  /** The account's committed state, through its actor (spawned and loaded if need be). */
  async read(id: AccountId, hops = 0, trace?: TraceContext): Promise<AccountState | undefined> {
    if (this.draining) throw new GeopayError('draining');
    const shard = this.shardOf(id);
    const route = await this.ownership.route(shard);
    if (route.kind === 'unavailable') throw new GeopayError('shard_unavailable', route.reason);
    if (route.kind === 'remote') {
      if (!this.forwarder) throw new GeopayError('shard_unavailable', 'owned by another node');
      const r = await this.forwarder.read(route.url, id, hops, trace);
      if ('error' in r) {
        if (isRouteFailure(r.error)) this.ownership.forget(shard);
        throw r.error;
      }
      return r.state as AccountState | undefined;
    }
    // Actor memory is the truth only while this node owns the shard: the epoch is taken before
    // the actor answers and confirmed after (lease, or a bounded epoch check on one node), so a
    // zombie's memory is never served past the bound.
    const epoch = await this.ownership.epochFor(shard);
    const h = this.handleFor(id);
    h.queued++;
    const r = await ask<AccountMsg, { state: AccountState | undefined } | { error: GeopayError }>(this.wake(h), (reply) => ({ type: 'Read', reply }), this.cfg.askTimeoutMs);
    if ('error' in r) throw r.error;
    await this.ownership.confirmRead(shard, epoch);
    return r.state;
  }

  async inspect(id: AccountId): Promise<Inspection | { resident: false }> {
    const h = this.actors.get(id);
    if (!h) return { resident: false };
    h.queued++;
    try {
      // Inspect does not count as a command; undo the count when it is handled.
      return await ask<AccountMsg, Inspection>(this.wake(h), (reply) => ({ type: 'Inspect', reply: (i) => { h.queued--; reply(i); } }), this.cfg.askTimeoutMs);
    } catch {
      return { resident: false };
    }
  }

  mailboxDepth(id: AccountId): number {
    const h = this.actors.get(id);
    return h ? h.queued + h.depth : 0;
  }

  /** Mailbox depths of the `n` deepest resident actors, deepest first (no ids: the metrics'). */
  deepestMailboxes(n: number): number[] {
    return this.hottest(n).map((h) => h.depth);
  }

  /** The `n` resident actors with the deepest mailboxes, deepest first (the ops page's hot accounts). */
  hottest(n: number): { id: AccountId; depth: number }[] {
    const top: { id: AccountId; depth: number }[] = [];
    for (const h of this.actors.values()) {
      const depth = h.queued + h.depth;
      if (depth === 0 || (top.length === n && depth <= top[n - 1]!.depth)) continue;
      top.push({ id: h.id, depth });
      top.sort((a, b) => b.depth - a.depth);
      if (top.length > n) top.pop();
    }
    return top;
  }

  residentCount(): number {
    return this.actors.size;
  }

  /** Resident accounts whose actor is running: those with work; the others are at rest. */
  awakeCount(): number {
    let n = 0;
    for (const h of this.actors.values()) if (h.ref) n++;
    return n;
  }

  /** Registers a listener for committed write sets (the saga's next steps, outcome waiters). */
  onCommitted(listener: CommitListener): void {
    this.listeners.push(listener);
  }

  /** Opens a ledger-owned account (external, suspense) on first use; the failed open, if it failed. */
  ensureLedgerAccount(id: AccountId): Promise<CommandResult | undefined> {
    return this.ledger.ensureOpen(id);
  }

  /**
   * Delivers the credit leg of a transfer; the destination applies it exactly once. Between
   * regions that is a saga between their databases: the destination's region commits the
   * credit (or the refusal) as its inbound leg and answers the outcome, which the source
   * account then commits to the transfer row (Settle). A failure between the two leaves the
   * transfer `debited`: the relay delivers again and is answered the same outcome.
   */
  async deliverCredit(t: CreditLeg, redelivery: boolean, trace: TraceContext): Promise<CommandResult> {
    const r = await this.applyCredit(t, redelivery, trace);
    if (r.type !== 'done' || !r.leg) return r;
    return this.settle(t, r.leg, redelivery, trace);
  }

  /**
   * The credit leg at its destination, exactly once. A domestic credit settles the transfer in
   * the same commit; a cross-region one answers its outcome (`leg`) for the source to settle by.
   */
  async applyCredit(t: CreditLeg, redelivery: boolean, trace: TraceContext): Promise<CommandResult> {
    const notOpen = await this.ensureLedgerAccount(t.destinationId);
    if (notOpen) return notOpen;
    return this.send(t.destinationId, { cmd: { type: 'Credit', transferId: t.id, amount: t.amount, currency: t.currency, alreadyApplied: false }, careful: redelivery }, { trace });
  }

  /** A cross-region credit's outcome, committed by the source account to its transfer row, exactly once. */
  settle(t: Pick<CreditLeg, 'id' | 'sourceId'>, leg: LegOutcome, redelivery: boolean, trace: TraceContext): Promise<CommandResult> {
    return this.send(t.sourceId, { cmd: { type: 'Settle', transferId: t.id, refusal: leg.refusal, alreadyApplied: false }, careful: redelivery }, { trace });
  }

  /**
   * Gives refused money back to the source, exactly once; a returned refund gives back its
   * claim on `refundOf`. `forwardId` names the transfer to suspense should the source be
   * closed: a new one each delivery, used only by the one that applies the return.
   */
  deliverReturn(t: { id: TransferId; sourceId: AccountId; amount: bigint; refundOf?: TransferId | null }, redelivery: boolean, trace: TraceContext): Promise<CommandResult> {
    const forwardId = makeTransferId(regionOf(t.sourceId), uuidv7Hex(this.clock(), randomBytes(10)));
    const refundOf = t.refundOf ? { refundOf: t.refundOf } : {};
    return this.send(t.sourceId, { cmd: { type: 'Return', transferId: t.id, amount: t.amount, alreadyApplied: false, forwardId, ...refundOf }, careful: redelivery }, { trace });
  }

  private afterCommit(ws: WriteSet): void {
    this.commits++;
    for (const l of this.listeners) l(ws);
  }

  private handleFor(id: AccountId): ActorHandle {
    const existing = this.actors.get(id);
    if (existing) return existing;
    if (this.actors.size >= this.cfg.maxResidentActors) this.passivateIdle(true);
    const h = new ActorHandle(id, this.internShard(this.shardOf(id)), Date.now());
    this.wake(h);
    this.actors.set(id, h);
    return h;
  }

  /** One string per shard, however many of its accounts are resident. */
  private internShard(shard: ShardId): ShardId {
    const known = this.shards.get(shard);
    if (known !== undefined) return known;
    this.shards.set(shard, shard);
    return shard;
  }

  /**
   * The account's actor: the running one, or one spawned now, from the resting state if the
   * account rests (ready at once), or loading if it was never loaded. Every message to an
   * account goes through here, so none is told to an actor that went to rest.
   */
  private wake(h: ActorHandle): ActorRef<AccountMsg> {
    if (h.ref) return h.ref;
    const region = shardParts(h.shard).region;
    const deps = this.depsFor(region);
    const handler = makeAccountHandler(h, deps);
    const resting = h.resting;
    h.resting = undefined;
    const initial = resting ? wokenActorState(resting, h.lastActivity) : initialActorState(Date.now());
    const ref = spawn<ActorState, AccountMsg>(
      this.system, `${h.id}.g${++this.generation}`, initial,
      (s, msg, self) => {
        // The registry counts up each Command and Read it dispatches (sendLocal, read), and
        // counts it down here, when nact hands it to the actor.
        if (msg.type === 'Command' || msg.type === 'Read') h.queued--;
        const next = handler(s, msg, self);
        if (!h.retired && self.unhandled === 0) this.restIfIdle(h, next, self);
        return next;
      },
      (err, msg) => {
        // A bug in the handler: answer the message that hit it, retire the actor (its
        // successor reloads from the journal) and keep the process honest in the logs.
        this.logger.error({ err, account: h.id, msg: msg.type }, 'account actor fault');
        if (msg.type === 'Command') msg.req.reply({ type: 'error', error: new GeopayError('internal_error') });
        this.retire(h);
      },
    );
    h.ref = ref;
    if (!resting) startLoadFor(deps.pool, h.id, ref, () => this.ownership.epochFor(h.shard));
    return ref;
  }

  /**
   * An idle actor stops and leaves its state on the handle: a resident account costs its state,
   * not a nact actor. It stops inside its own handler with nact holding nothing for it and no
   * async result to come (restingStateOf), so no message can be lost by the stop.
   */
  private restIfIdle(h: ActorHandle, s: ActorState, self: ActorRef<AccountMsg>): void {
    const resting = restingStateOf(s);
    if (!resting) return;
    h.resting = resting;
    h.ref = undefined;
    stopActor(self);
  }

  /** What every actor of a region is given; made once per region, shared by its actors. */
  private depsFor(region: Region): ActorDeps {
    const known = this.deps.get(region);
    if (known) return known;
    const { pool, writer } = this.stores.of(region);
    const deps: ActorDeps = {
      pool,
      ownership: this.ownership,
      nodeId: this.cfg.nodeId,
      snapshotEvery: this.cfg.snapshotEvery,
      maxBatch: this.cfg.maxBatch,
      mailboxLimit: this.cfg.mailboxLimit,
      logger: this.logger,
      now: Date.now,
      writer,
      // Read at each use: the HTTP layer sets it after the registry is built.
      rejectionAnswer: (code) => this.rejectionAnswer(code),
      faultCommitDelayMs: this.cfg.faultCommitDelayMs,
      afterCommit: (ws) => this.afterCommit(ws),
      retire: (x) => this.retire(x),
      passivated: (x) => this.remove(x),
      metrics: this.metrics,
    };
    this.deps.set(region, deps);
    return deps;
  }

  private retire(h: ActorHandle): void {
    h.retired = true;
    if (this.actors.get(h.id) === h) this.actors.delete(h.id);
    const ref = h.ref;
    if (!ref) return;
    // Stop only once nact's mailbox is empty and no commit is out: a stop drops whatever it
    // still holds, including the result of a commit still to come back.
    const stopWhenEmpty = () => {
      if (h.queued <= 0 && !h.flushing) stopActor(ref);
      else setTimeout(stopWhenEmpty, 50).unref();
    };
    stopWhenEmpty();
  }

  private remove(h: ActorHandle): void {
    if (this.actors.get(h.id) === h) this.actors.delete(h.id);
    if (h.ref) stopActor(h.ref);
  }

  /**
   * Tells the account's actor to passivate. A resting account with nothing to snapshot stops
   * here, as its actor would (restingStep): waking an actor for it would spawn one per idle
   * account at once, the very memory resting saves.
   */
  private passivate(h: ActorHandle, request: PassivationRequest): void {
    if (h.resting && restingStep(h.resting, h.queued) === 'stop') {
      request.done(true);
      this.remove(h);
      return;
    }
    tell(this.wake(h), { type: 'Passivate', ...request });
  }

  /** Asks idle actors to snapshot and stop; `pressure` also takes the least recently used. */
  private passivateIdle(pressure = false): void {
    const now = Date.now();
    let excess = pressure ? Math.max(1, Math.ceil(this.actors.size * 0.1)) : 0;
    const byAge = [...this.actors.values()].sort((a, b) => a.lastActivity - b.lastActivity);
    for (const h of byAge) {
      const idle = now - h.lastActivity >= this.cfg.actorIdleMs;
      if (!idle && excess <= 0) break;
      if (h.queued > 0 || h.depth > 0) continue;
      excess--;
      this.passivate(h, { wait: false, done: () => undefined });
    }
  }

  /**
   * Hand-over: every actor of the shard finishes its mailbox, snapshots and stops. One still
   * resident after that (the drain timed out with a commit in flight, or its snapshot failed)
   * is retired: kept, its memory would hide the next owner's writes if the shard came back.
   */
  async drainShard(shard: ShardId, timeoutMs: number): Promise<void> {
    const all = [...this.actors.values()].filter((h) => h.shard === shard);
    const done = Promise.all(all.map((h) => new Promise<void>((resolve) => {
      this.passivate(h, { wait: true, done: () => resolve() });
    })));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); })]);
    clearTimeout(timer);
    this.retireShard(shard, 'was handed over');
  }

  /** The shard's lease is gone (or it was handed over): its actors stop at once and answer what they hold, retryable. */
  retireShard(shard: ShardId, why = 'lost its lease'): void {
    for (const h of [...this.actors.values()]) {
      if (h.shard !== shard) continue;
      const error = new GeopayError('shard_unavailable', `shard ${shard} ${why}`);
      if (!h.resting) {
        tell(this.wake(h), { type: 'Retire', error });
        continue;
      }
      // At rest it holds nothing to answer: retired here, as its actor would retire itself.
      this.logger.warn({ account: h.id, shard, code: error.code, reason: error.message }, 'actor retired: shard lost or handed over');
      this.retire(h);
    }
  }

  /** Shutdown: refuse new commands, let every actor finish its mailbox, snapshot, stop. */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    const all = [...this.actors.values()];
    const done = Promise.all(all.map((h) => new Promise<void>((resolve) => {
      this.passivate(h, { wait: true, done: () => resolve() });
    })));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); })]);
    clearTimeout(timer);
    stopSystem(this.system);
  }
}
