// The saga's safety net: transfers left `debited` (the credit was never applied, say after a
// crash) are re-delivered to the destination, and `refused` ones back to the source.
// At-least-once delivery; the actors apply each leg exactly once. The hold sweeper releases
// holds past their deadline. Both take only rows of the shards this node owns, due first, in
// claims of CLAIM_SIZE rows; a row taken waits a growing backoff before it is taken again, so
// a backlog that cannot move (a region down) never hides the rows behind it. Whether a row is
// due is decided on the database's clock, never on this node's.
import type { Metrics } from '../observability/metrics.ts';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { AccountId, HoldId, TenantId, TransferId } from '../domain/ids.ts';
import { makeTransferId, regionOf, uuidv7Hex } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import type { DueHold, InFlightTransfer, RegionRepositories, Repositories, WorkClaim } from '../persistence/repositories.ts';
import { newTrace } from '../observability/trace.ts';
import type { TraceContext } from '../observability/trace.ts';
import type { CreditLeg } from '../actors/registry.ts';
import type { CommandResult } from '../actors/protocol.ts';
import type { BusLegs } from './legs.ts';
import { GeopayError } from '../domain/errors.ts';

/** Rows per claim, delivered together: a backlog aimed at one hot account must not fill its mailbox. */
const CLAIM_SIZE = 32;

/** A region database and the shards of it this node owns. */
export interface WorkSource { repos: Pick<RegionRepositories, 'transfers' | 'holds'>; shards: string[] }

export interface RelayOptions {
  intervalMs: number;
  minAgeMs: number;
  /** Rows one pass takes at most, transfers and holds each. */
  batch: number;
  /** Longest wait before a row is taken again; the wait doubles from max(minAgeMs, intervalMs). */
  maxBackoffMs: number;
  /** Ids (capture transfers) are time-sortable by this clock. */
  clock: () => number;
  /**
   * The shards this node owns and may write now, by region database: their rows are its work,
   * nobody else's. The home region's, and another's while this node holds its shards (failover).
   */
  sources: () => WorkSource[];
  /** Tests only: a virtual clock that stands for everyone's time, the database's too (startNode's `clock`). */
  virtualNow?: () => number;
  metrics?: Pick<Metrics, 'relayRedeliveries'>;
  /** With the legs on the bus: a debited transfer whose leg travels by it is published again, not delivered over HTTP. */
  legs?: Pick<BusLegs, 'carries' | 'publishCredit'>;
}

export class Relay {
  private timer: NodeJS.Timeout | undefined;
  /** The pass of each kind in progress, if any: one at a time, so no pass skips rows another holds locked. */
  private readonly busy: { relay?: Promise<number>; sweep?: Promise<number> } = {};

  constructor(
    private readonly repos: Pick<Repositories, 'groups'>,
    private readonly registry: AccountRegistry,
    private readonly opts: RelayOptions,
    private readonly logger: Logger,
  ) {}

  start(): void {
    const pass = () => void this.exclusive('relay', () => this.relayTransfers(this.opts.minAgeMs, false), true)
      .then(() => this.exclusive('sweep', () => this.sweepHolds(false), true));
    this.timer = setInterval(pass, this.opts.intervalMs);
    this.timer.unref();
    pass();
  }

  /**
   * A timer's pass is skipped while one of its kind runs (never stacked); an explicit call waits
   * for that one, then runs its own, so when it resolves every due row has been handled.
   */
  private exclusive(kind: 'relay' | 'sweep', work: () => Promise<number>, skipIfBusy: boolean): Promise<number> {
    const running = this.busy[kind];
    if (running && skipIfBusy) return Promise.resolve(0);
    const next = (running ?? Promise.resolve(0)).then(work, work);
    this.busy[kind] = next;
    void next.finally(() => { if (this.busy[kind] === next) delete this.busy[kind]; }).catch(() => undefined);
    return next;
  }

  /**
   * Releases this node's holds past their deadline now, backoff or not (tests and operators;
   * the timer's passes honour it). Returns how many it took.
   */
  expireHolds(): Promise<number> {
    return this.exclusive('sweep', () => this.sweepHolds(true), false);
  }

  private async sweepHolds(ignoreBackoff: boolean): Promise<number> {
    try {
      // Production asks the database which holds are due (null: its now()); a test's virtual clock stands in for it.
      const asOf = this.opts.virtualNow ? new Date(this.opts.virtualNow()).toISOString() : null;
      return await this.drain((s, c) => s.repos.holds.claimDue(asOf, c), (h) => this.expireHold(h, h.asOf), ignoreBackoff);
    } catch (err) {
      this.logger.warn({ err }, 'hold expiry pass failed');
      return 0;
    }
  }

  /**
   * Claims and handles up to `batch` rows of each region database, CLAIM_SIZE at a time, each
   * row once per pass. A region database that fails is left to the next pass; the others go on.
   */
  private async drain<T extends { id: string }>(claim: (s: WorkSource, c: WorkClaim) => Promise<T[]>, handle: (row: T) => Promise<void>, ignoreBackoff: boolean): Promise<number> {
    let total = 0;
    let failure: unknown;
    for (const source of this.opts.sources()) {
      if (source.shards.length === 0) continue;
      try {
        total += await this.drainOne(source, claim, handle, ignoreBackoff);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
    return total;
  }

  private async drainOne<T extends { id: string }>(source: WorkSource, claim: (s: WorkSource, c: WorkClaim) => Promise<T[]>, handle: (row: T) => Promise<void>, ignoreBackoff: boolean): Promise<number> {
    const seen: string[] = [];
    const backoffMs = Math.max(this.opts.minAgeMs, this.opts.intervalMs, 1);
    while (seen.length < this.opts.batch) {
      const rows = await claim(source, { shards: source.shards, exclude: seen, limit: Math.min(CLAIM_SIZE, this.opts.batch - seen.length), backoffMs, maxBackoffMs: this.opts.maxBackoffMs, ignoreBackoff });
      if (rows.length === 0) break;
      seen.push(...rows.map((r) => r.id));
      await Promise.all(rows.map(handle));
    }
    return seen.length;
  }

  private async expireHold(h: DueHold, now: string): Promise<void> {
    const holdId = h.id as HoldId;
    // A linked group's hold follows the group's decision; an undecided group is aborted
    // here, and the coordinator, finding 'abort', releases the rest.
    const decision = h.groupId ? await this.repos.groups.decide(h.groupId, 'abort') : 'abort';
    const r = decision === 'commit'
      ? await this.registry.send(h.sourceId as AccountId, {
        cmd: { type: 'Capture', holdId, transferId: makeTransferId(regionOf(h.sourceId as AccountId), uuidv7Hex(this.opts.clock(), randomBytes(10))), amount: undefined, at: now, decided: true },
        transfer: { destinationId: h.destinationId as AccountId, kind: 'capture', tenantId: h.tenantId as TenantId | null, metadata: null },
      })
      : await this.registry.send(h.sourceId as AccountId, { cmd: { type: 'Expire', holdId, at: now } });
    if (r.type === 'error') this.logger.warn({ hold: h.id, code: r.error.code }, 'hold expiry failed; next pass retries');
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /**
   * One pass over this node's transfers in flight; returns how many it tried. With `minAgeMs`
   * given (tests, operators) it takes every one that old now, backoff or not.
   */
  runOnce(minAgeMs?: number): Promise<number> {
    return this.exclusive('relay', () => this.relayTransfers(minAgeMs ?? this.opts.minAgeMs, minAgeMs !== undefined), false);
  }

  private async relayTransfers(minAgeMs: number, ignoreBackoff: boolean): Promise<number> {
    try {
      // A debited transfer is the source owner's to finish, a refused one too (it returns to the source).
      const n = await this.drain((s, c) => s.repos.transfers.claimInFlight(minAgeMs, c), (t) => this.redeliver(t), ignoreBackoff);
      if (n > 0) this.logger.info({ count: n }, 'relay re-delivered transfers');
      return n;
    } catch (err) {
      this.logger.warn({ err }, 'relay pass failed');
      return 0;
    }
  }

  /** Each re-delivery is a trace of its own, tied to its transfer by the line that starts it. */
  private async redeliver(t: InFlightTransfer): Promise<void> {
    const trace = newTrace();
    this.logger.info({ transfer: t.id, state: t.state, trace: trace.traceId }, 'relay re-delivering transfer');
    const r = t.state === 'debited'
      ? await this.redeliverCredit({ id: t.id as TransferId, sourceId: t.sourceId as AccountId, destinationId: t.destinationId as AccountId, amount: t.amount, currency: t.currency as Currency }, trace)
      : await this.registry.deliverReturn({ id: t.id as TransferId, sourceId: t.sourceId as AccountId, amount: t.amount, refundOf: t.refundOf as TransferId | null }, true, trace);
    if (r.type === 'error') this.logger.warn({ transfer: t.id, code: r.error.code, trace: trace.traceId }, 'relay delivery failed; it waits its backoff');
    else this.opts.metrics?.relayRedeliveries.inc();
  }

  /**
   * A leg on the bus is published again under its own Nats-Msg-Id: within the duplicate window a
   * copy still in the stream is not stored twice, and a later one finds the leg applied.
   */
  private async redeliverCredit(leg: CreditLeg, trace: TraceContext): Promise<CommandResult | { type: 'published' }> {
    const legs = this.opts.legs;
    if (!legs?.carries(leg)) return this.registry.deliverCredit(leg, true, trace);
    try {
      await legs.publishCredit(leg, true, trace);
      return { type: 'published' };
    } catch (err) {
      return { type: 'error', error: new GeopayError('shard_unavailable', `the bus: ${err instanceof Error ? err.message : String(err)}`) };
    }
  }
}
