// The transfer saga's after-commit steps. A committed debit sends the credit leg to the
// destination; a committed refusal gives the money back to the source; a committed settle or
// return wakes the requests waiting for that transfer. Whatever fails here is left to the
// relay (src/payments/relay.ts), which finds the transfer still in flight. Each leg runs in
// the trace of the request that committed the step before it, so the next node's log lines
// for the transfer carry the same trace id.
import type { Logger } from 'pino';
import type { AccountId, TransferId } from '../domain/ids.ts';
import { regionOf } from '../domain/ids.ts';
import type { AccountRegistry, CreditLeg } from '../actors/registry.ts';
import type { WriteSet } from '../persistence/journal.ts';
import type { Repositories } from '../persistence/repositories.ts';
import type { TraceContext } from '../observability/trace.ts';
import { newTrace } from '../observability/trace.ts';
import type { BusLegs } from './legs.ts';

export interface TransferOutcome { id: TransferId; state: 'settled' | 'returned'; at: string }

/** A request's wait for its transfer's outcome. */
export interface TransferWait {
  outcome: Promise<TransferOutcome | undefined>;
  cancel: () => void;
}

/** The wait's outcome if it comes within `ms`, else undefined; the wait is over either way. */
export async function outcomeWithin(wait: TransferWait, ms: number): Promise<TransferOutcome | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([wait.outcome, new Promise<undefined>((res) => { timer = setTimeout(() => res(undefined), ms); })]);
  clearTimeout(timer);
  wait.cancel();
  return outcome;
}

/** The legs on the bus, as the saga uses them (src/payments/legs.ts). */
export type SagaLegs = Pick<BusLegs, 'carries' | 'publishCredit' | 'notify' | 'watch'>;


/** Delays of the first delivery's attempts while the destination is busy; after that, the relay's. */
const FIRST_DELIVERY_DELAYS_MS = [0, 50, 250];

export class Saga {
  private readonly waiters = new Map<TransferId, Set<(o: TransferOutcome | undefined) => void>>();

  constructor(
    private readonly registry: AccountRegistry,
    private readonly transfers: Repositories['transfers'],
    private readonly logger: Logger,
    /** With NATS_URLS and LEGS_TRANSPORT=bus: legs between regions go by the bus, outcomes are told by it. */
    private readonly legs?: SagaLegs,
  ) {}

  /**
   * Runs the next step of every transfer a commit moved. This runs in whatever context the
   * commit came back in, which may be another request's: each leg sets its own trace.
   */
  afterCommit(ws: WriteSet): void {
    for (const t of ws.newTransfers) {
      const trace = this.legTrace(t.id);
      const leg: CreditLeg = { id: t.id, sourceId: t.sourceId, destinationId: t.destinationId, amount: t.amount, currency: t.currency };
      void (this.legs?.carries(leg) ? this.publishCredit(leg, trace) : this.deliverCreditSoon(leg, trace));
    }
    for (const u of ws.transferUpdates) {
      if (u.to === 'refused') {
        const trace = this.legTrace(u.id);
        void this.returnRefused(u.id, trace);
        continue;
      }
      const outcome: TransferOutcome = { id: u.id, state: u.to, at: u.at };
      const set = this.waiters.get(u.id);
      if (set) for (const cb of [...set]) cb(outcome);
      // Nobody waits here: the request may wait on another node (it took it and forwarded the debit).
      else this.legs?.notify(outcome);
    }
  }

  /**
   * Is a transfer's outcome committed on another node with nothing that brings it here? Only
   * a domestic leg on the bus (LEGS_SCOPE all): its destination's owner settles the row, and
   * only the bus's notice tells. Every other outcome is committed here (a cross-region leg's
   * Settle, by the source's owner), or answered to this node (a credit delivered by HTTP, a
   * forwarded debit: `heard`).
   */
  outcomeElsewhere(src: AccountId, dst: AccountId): boolean {
    return !!this.legs && regionOf(src) === regionOf(dst) && this.legs.carries({ sourceId: src, destinationId: dst });
  }

  /** Does a request on this node wait for the transfer's outcome? */
  waits(id: string): boolean {
    return this.waiters.has(id as TransferId);
  }

  /** An outcome told to this node, or undefined: whoever was asked waited and saw none (src/cluster/forward.ts). */
  heard(id: string, outcome: unknown): void {
    const set = this.waiters.get(id as TransferId);
    if (set) for (const cb of [...set]) cb(outcome as TransferOutcome | undefined);
  }

  /**
   * Resolves when the transfer settles or returns, or with undefined after `ms`, on cancel, or
   * when `heard` says none came. `watch`: listen to the bus for it (see outcomeElsewhere).
   */
  waitForTransfer(id: TransferId, ms: number, watch = false): TransferWait {
    let cancel = () => undefined as void;
    let heard: (o: TransferOutcome) => void = () => undefined;
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
      const cb = (o: TransferOutcome | undefined) => finish(o);
      const timer = setTimeout(() => finish(undefined), ms);
      cancel = () => finish(undefined);
      heard = cb;
      waiters.add(cb);
    });
    if (watch && this.legs) {
      // With the bus away nothing is heard: the waiter reads the row at its wait's end.
      const watching = this.legs.watch(id, (o) => heard(o));
      void outcome.then(() => watching.stop());
    }
    return { outcome, cancel };
  }

  /** The transfer's outcome as its row stands: undefined while it is in flight. */
  async outcomeOf(id: TransferId): Promise<TransferOutcome | undefined> {
    const t = await this.transfers.get(id);
    return t && (t.state === 'settled' || t.state === 'returned') ? { id, state: t.state, at: t.updatedAt } : undefined;
  }

  /** Shutdown: nobody waits any more. */
  clear(): void {
    for (const [, w] of this.waiters) w.clear();
  }

  /** The trace of the request that committed this step, or a new one (a step no request made: a hold's expiry). */
  private legTrace(id: TransferId): TraceContext {
    return this.registry.traceOf(id) ?? newTrace();
  }

  /** The first delivery, retried briefly when the destination is busy; after that the relay's. */
  private async deliverCreditSoon(t: CreditLeg, trace: TraceContext): Promise<void> {
    for (const delayMs of FIRST_DELIVERY_DELAYS_MS) {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      const r = await this.registry.deliverCredit(t, delayMs > 0, trace);
      // A domestic credit applied by another node settled the row there, and its answer says
      // when; one that did not (refused, or applied before) leaves a request waiting here to
      // read how the row stands.
      if (r.type === 'done' && !r.leg && this.waiters.has(t.id)) {
        if (r.settledAt !== undefined) this.heard(t.id, { id: t.id, state: 'settled', at: r.settledAt } satisfies TransferOutcome);
        else void this.tellFromRow(t.id);
      }
      if (r.type !== 'error') return;
      if (r.error.code !== 'mailbox_full' && r.error.code !== 'shard_unavailable') {
        this.logger.warn({ transfer: t.id, code: r.error.code, trace: trace.traceId }, 'credit delivery failed; the relay will retry');
        return;
      }
    }
    this.logger.info({ transfer: t.id, trace: trace.traceId }, 'destination busy; the relay will deliver the credit');
  }

  private async tellFromRow(id: TransferId): Promise<void> {
    try {
      const outcome = await this.outcomeOf(id);
      if (outcome) this.heard(id, outcome);
    } catch (err) {
      // The request answers at its wait's end, with one read of its own.
      this.logger.debug({ err, transfer: id }, 'transfer row not read after its credit');
    }
  }

  /** The first publish of a leg that goes by the bus; failed (the bus away), the relay publishes it again. */
  private async publishCredit(t: CreditLeg, trace: TraceContext): Promise<void> {
    try {
      await this.legs!.publishCredit(t, false, trace);
    } catch (err) {
      this.logger.info({ err, transfer: t.id, trace: trace.traceId }, 'credit leg not published; the relay will publish it');
    }
  }

  private async returnRefused(id: TransferId, trace: TraceContext): Promise<void> {
    try {
      const t = await this.transfers.source(id);
      if (t) await this.registry.deliverReturn({ id, sourceId: t.sourceId as AccountId, amount: t.amount, refundOf: t.refundOf as TransferId | null }, false, trace);
    } catch (err) {
      this.logger.warn({ err, transfer: id, trace: trace.traceId }, 'return delivery failed; the relay will retry');
    }
  }
}
