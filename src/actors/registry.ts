// The node's account actors: spawned on demand, routed to by id, passivated when idle, and
// drained at shutdown. It also runs the saga's next step after each commit (credit the
// destination, return refused money) and wakes requests waiting for a transfer to settle.
import type { Logger } from 'pino';
import type { AccountId, TransferId } from '../domain/ids.ts';
import { shardOf } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { Currency } from '../domain/money.ts';
import type { AccountState } from '../domain/account.ts';
import type { Pool } from '../persistence/db.ts';
import type { WriteSet } from '../persistence/journal.ts';
import type { GroupWriter } from '../persistence/writer.ts';
import type { Ownership, Route } from '../cluster/ownership.ts';
import type { Forwarder } from '../cluster/forward.ts';
import type { ActorSystem } from './nact.ts';
import { ask, spawn, startSystem, stopActor, stopSystem, tell } from './nact.ts';
import type { AccountMsg, ActorHandle, Inspection } from './account-actor.ts';
import { initialActorState, makeAccountHandler, startLoadFor } from './account-actor.ts';
import type { AccountRequest, CommandResult } from './protocol.ts';

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

export interface TransferOutcome { id: TransferId; state: 'settled' | 'refused' | 'returned'; at: string }

export class AccountRegistry {
  private readonly system: ActorSystem;
  private readonly actors = new Map<AccountId, ActorHandle>();
  private generation = 0;
  private draining = false;
  private readonly waiters = new Map<TransferId, Set<(o: TransferOutcome) => void>>();
  private idleTimer: NodeJS.Timeout | undefined;
  /** Commits since start; tests count transactions with it. */
  commits = 0;

  constructor(
    private readonly pool: Pool,
    private readonly ownership: Ownership,
    private readonly cfg: RegistryConfig,
    private readonly logger: Logger,
    private readonly writer: GroupWriter,
    /** Business time (command `at`, hold expiry); tests control it. */
    private readonly clock: () => number = Date.now,
    /** Carries requests for shards owned elsewhere (cluster mode only). */
    private readonly forwarder?: Forwarder,
  ) {
    this.system = startSystem(`geopay-${cfg.nodeId}-${process.pid}-${Date.now()}`);
    const every = Math.max(10, Math.floor(cfg.actorIdleMs / 2));
    this.idleTimer = setInterval(() => this.passivateIdle(), every);
    this.idleTimer.unref();
  }

  shardOf(id: AccountId): string {
    return shardOf(id, this.cfg.shardBuckets);
  }

  /** Sends a request to the account's actor and waits for its reply (bounded). */
  send(id: AccountId, req: AccountRequest, opts: { timeoutMs?: number; at?: string; hops?: number } = {}): Promise<CommandResult> {
    if (this.draining) return Promise.resolve({ type: 'error', error: new GeopayError('draining') });
    const route = this.ownership.route(this.shardOf(id));
    // The single-node route is known at once; a cluster route may need a lookup.
    if (route instanceof Promise) return route.then((r) => this.sendVia(r, id, req, opts));
    return this.sendVia(route, id, req, opts);
  }

  private sendVia(route: Route, id: AccountId, req: AccountRequest, opts: { timeoutMs?: number; at?: string; hops?: number }): Promise<CommandResult> {
    const at = opts.at ?? new Date(this.clock()).toISOString();
    if (route.kind === 'unavailable') return Promise.resolve({ type: 'error', error: new GeopayError('shard_unavailable', route.reason) });
    if (route.kind === 'remote') {
      if (!this.forwarder) return Promise.resolve({ type: 'error', error: new GeopayError('shard_unavailable', 'owned by another node') });
      return this.forwarder.send(route.url, id, req, at, opts.hops ?? 0);
    }
    return this.sendLocal(id, req, at, opts.timeoutMs);
  }

  private sendLocal(id: AccountId, req: AccountRequest, at: string, timeoutMs?: number): Promise<CommandResult> {
    const h = this.handleFor(id);
    h.queued++;
    return ask<AccountMsg, CommandResult>(h.ref, (reply) => ({ type: 'Command', req: { ...req, reply, at } }), timeoutMs ?? this.cfg.askTimeoutMs)
      .catch((error: unknown) => ({ type: 'error', error: error instanceof GeopayError ? error : new GeopayError('internal_error', undefined, { cause: error }) }));
  }

  /** Is the account's shard owned and writable here right now? */
  isLocal(id: AccountId): boolean {
    return this.ownership.isLocal(this.shardOf(id));
  }

  /** The account's committed state, through its actor (spawned and loaded if need be). */
  async read(id: AccountId, hops = 0): Promise<AccountState | undefined> {
    if (this.draining) throw new GeopayError('draining');
    const route = await this.ownership.route(this.shardOf(id));
    if (route.kind === 'unavailable') throw new GeopayError('shard_unavailable', route.reason);
    if (route.kind === 'remote') {
      if (!this.forwarder) throw new GeopayError('shard_unavailable', 'owned by another node');
      const r = await this.forwarder.read(route.url, id, hops);
      if ('error' in r) throw r.error;
      return r.state as AccountState | undefined;
    }
    const h = this.handleFor(id);
    h.queued++;
    const r = await ask<AccountMsg, { state: AccountState | undefined } | { error: GeopayError }>(h.ref, (reply) => ({ type: 'Read', reply }), this.cfg.askTimeoutMs);
    if ('error' in r) throw r.error;
    return r.state;
  }

  async inspect(id: AccountId): Promise<Inspection | { resident: false }> {
    const h = this.actors.get(id);
    if (!h) return { resident: false };
    h.queued++;
    try {
      // Inspect does not count as a command; undo the count when it is handled.
      return await ask<AccountMsg, Inspection>(h.ref, (reply) => ({ type: 'Inspect', reply: (i) => { h.queued--; reply(i); } }), this.cfg.askTimeoutMs);
    } catch {
      return { resident: false };
    }
  }

  mailboxDepth(id: AccountId): number {
    const h = this.actors.get(id);
    return h ? h.queued + h.depth : 0;
  }

  residentCount(): number {
    return this.actors.size;
  }

  /** Resolves when the transfer leaves `debited`, or undefined after `ms` or on cancel. */
  waitForTransfer(id: TransferId, ms: number): { outcome: Promise<TransferOutcome | undefined>; cancel: () => void } {
    let cancel = () => undefined as void;
    const outcome = new Promise<TransferOutcome | undefined>((resolve) => {
      let set = this.waiters.get(id);
      if (!set) this.waiters.set(id, (set = new Set()));
      const waiters = set;
      const finish = (o: TransferOutcome | undefined) => {
        clearTimeout(timer);
        waiters.delete(cb);
        if (waiters.size === 0 && this.waiters.get(id) === waiters) this.waiters.delete(id);
        resolve(o);
      };
      const cb = (o: TransferOutcome) => finish(o);
      const timer = setTimeout(() => finish(undefined), ms);
      cancel = () => finish(undefined);
      waiters.add(cb);
    });
    return { outcome, cancel };
  }

  /** Delivers the credit leg of a transfer; the destination applies it exactly once. */
  deliverCredit(t: { id: TransferId; destinationId: AccountId; amount: bigint; currency: Currency }, redelivery = false): Promise<CommandResult> {
    return this.send(t.destinationId, { cmd: { type: 'Credit', transferId: t.id, amount: t.amount, currency: t.currency, alreadyApplied: false }, careful: redelivery });
  }

  /** The first delivery, retried briefly when the destination is busy; after that the relay's. */
  private async deliverCreditSoon(t: { id: TransferId; destinationId: AccountId; amount: bigint; currency: Currency }): Promise<void> {
    for (const delayMs of [0, 50, 250]) {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      const r = await this.deliverCredit(t, delayMs > 0);
      if (r.type !== 'error') return;
      if (r.error.code !== 'mailbox_full' && r.error.code !== 'shard_unavailable') {
        this.logger.warn({ transfer: t.id, code: r.error.code }, 'credit delivery failed; the relay will retry');
        return;
      }
    }
    this.logger.info({ transfer: t.id }, 'destination busy; the relay will deliver the credit');
  }

  /** Gives refused money back to the source, exactly once. */
  deliverReturn(t: { id: TransferId; sourceId: AccountId; amount: bigint }, redelivery = false): Promise<CommandResult> {
    return this.send(t.sourceId, { cmd: { type: 'Return', transferId: t.id, amount: t.amount, alreadyApplied: false }, careful: redelivery });
  }

  private afterCommit(ws: WriteSet): void {
    this.commits++;
    for (const t of ws.newTransfers) {
      void this.deliverCreditSoon({ id: t.id, destinationId: t.destinationId, amount: t.amount, currency: t.currency });
    }
    for (const u of ws.transferUpdates) {
      if (u.to === 'refused') {
        void this.pool.query<{ source_id: string; amount: bigint }>('SELECT source_id, amount FROM transfers WHERE id = $1', [u.id]).then(({ rows }) => {
          const row = rows[0];
          if (row) return this.deliverReturn({ id: u.id, sourceId: row.source_id as AccountId, amount: row.amount });
          return undefined;
        }).catch((err: unknown) => this.logger.warn({ err, transfer: u.id }, 'return delivery failed; the relay will retry'));
      }
      const set = this.waiters.get(u.id);
      if (set && u.to !== 'refused') for (const cb of [...set]) cb({ id: u.id, state: u.to, at: u.at });
    }
  }

  private handleFor(id: AccountId): ActorHandle {
    const existing = this.actors.get(id);
    if (existing) return existing;
    if (this.actors.size >= this.cfg.maxResidentActors) this.passivateIdle(true);
    const shard = this.shardOf(id);
    const h: ActorHandle = { id, shard, ref: undefined as never, queued: 0, depth: 0, lastActivity: Date.now(), retired: false, flushing: false };
    const handler = makeAccountHandler(h, {
      pool: this.pool,
      ownership: this.ownership,
      nodeId: this.cfg.nodeId,
      snapshotEvery: this.cfg.snapshotEvery,
      maxBatch: this.cfg.maxBatch,
      mailboxLimit: this.cfg.mailboxLimit,
      logger: this.logger,
      now: Date.now,
      commit: (ws) => this.writer.commit(ws),
      faultCommitDelayMs: this.cfg.faultCommitDelayMs,
      afterCommit: (ws) => this.afterCommit(ws),
      retire: (x) => this.retire(x),
      passivated: (x) => this.remove(x),
    });
    h.ref = spawn<ReturnType<typeof initialActorState>, AccountMsg>(
      this.system, `${id}.g${++this.generation}`, initialActorState(Date.now()), handler,
      (err, msg) => {
        // A bug in the handler: answer the message that hit it, retire the actor (its
        // successor reloads from the journal) and keep the process honest in the logs.
        this.logger.error({ err, account: id, msg: msg.type }, 'account actor fault');
        if (msg.type === 'Command') msg.req.reply({ type: 'error', error: new GeopayError('internal_error') });
        this.retire(h);
      },
    );
    this.actors.set(id, h);
    startLoadFor(this.pool, id, h.ref);
    return h;
  }

  private retire(h: ActorHandle): void {
    h.retired = true;
    if (this.actors.get(h.id) === h) this.actors.delete(h.id);
    // Stop only once nact's mailbox is empty and no commit is out: a stop drops whatever it
    // still holds, including the result of a commit still to come back.
    const stopWhenEmpty = () => {
      if (h.queued <= 0 && !h.flushing) stopActor(h.ref);
      else setTimeout(stopWhenEmpty, 50).unref();
    };
    stopWhenEmpty();
  }

  private remove(h: ActorHandle): void {
    if (this.actors.get(h.id) === h) this.actors.delete(h.id);
    stopActor(h.ref);
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
      h.queued++;
      tell(h.ref, { type: 'Passivate', wait: false, done: () => undefined });
      h.queued--;
    }
  }

  /** Hand-over: every actor of the shard finishes its mailbox, snapshots and stops. */
  async drainShard(shard: string, timeoutMs: number): Promise<void> {
    const all = [...this.actors.values()].filter((h) => h.shard === shard);
    const done = Promise.all(all.map((h) => new Promise<void>((resolve) => {
      tell(h.ref, { type: 'Passivate', wait: true, done: () => resolve() });
    })));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); })]);
    clearTimeout(timer);
  }

  /** The shard's lease is gone: its actors stop at once and answer what they hold, retryable. */
  retireShard(shard: string): void {
    for (const h of [...this.actors.values()]) {
      if (h.shard !== shard) continue;
      tell(h.ref, { type: 'Retire', error: new GeopayError('shard_unavailable', `shard ${shard} lost its lease`) });
    }
  }

  /** Shutdown: refuse new commands, let every actor finish its mailbox, snapshot, stop. */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    const all = [...this.actors.values()];
    const done = Promise.all(all.map((h) => new Promise<void>((resolve) => {
      tell(h.ref, { type: 'Passivate', wait: true, done: () => resolve() });
    })));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); })]);
    clearTimeout(timer);
    for (const [, w] of this.waiters) w.clear();
    stopSystem(this.system);
  }
}
