// Transfer legs on the bus (NATS JetStream): with NATS_URLS and LEGS_TRANSPORT=bus, a transfer's
// credit leg to another region, and the outcome back, travel through durable streams instead of
// an HTTP call between nodes.
//
// - Each region has a stream, GEOPAY_LEGS_<REGION>, subjects geopay.legs.<region>.<bucket>.<kind>,
//   work-queue retention (a message is removed once acked). Each shard has a durable pull consumer,
//   legs-<region>-<bucket>, filtered to its bucket: the node that owns the shard runs it, and stops
//   it when the shard leaves (a reconcile every RECONCILE_MS).
// - The source's owner publishes the credit after the debit committed (Nats-Msg-Id
//   `<transfer>.credit`). The destination's owner applies it exactly once (the inbound leg, keyed
//   by transfer id), publishes the outcome to the source region's stream (`<transfer>.outcome`),
//   and only then acks. The source's owner commits the outcome (Settle) and acks; a refusal is
//   returned to the source as before.
// - The PostgreSQL row stays the truth: a transfer still `debited` past RELAY_MIN_AGE_MS is
//   published again by the relay, so a crash between commit and publish, or a bus that was away,
//   loses nothing. A copy of a leg applied already answers the first outcome and writes nothing.
// - A request waits for the outcome on the source's owner (a debit forwarded there is answered
//   with it: src/payments/forwarded.ts), which commits a cross-region outcome itself. A domestic
//   leg on the bus (scope 'all') is settled by the destination's owner, which publishes the
//   outcome on a core subject, geopay.outcomes.<transfer>, when nobody waits there: no polling.
//   That notice is at most once; missed, the request reads the row once at its wait's end.
import type { Logger } from 'pino';
import type { AccountRegistry, CreditLeg } from '../actors/registry.ts';
import type { LegOutcome } from '../actors/protocol.ts';
import type { Bus, BusKeeper, BusMessage, ConsumerRunner, HandlerOutcome, StreamSpec } from '../bus/index.ts';
import { DEFAULT_DUPLICATE_WINDOW_MS } from '../bus/index.ts';
import type { Ownership } from '../cluster/ownership.ts';
import type { ErrorCode } from '../domain/errors.ts';
import type { AccountId, Region, ShardId, TransferId } from '../domain/ids.ts';
import { regionOf, shardOf, shardParts } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { TraceContext } from '../observability/trace.ts';
import { TRACEPARENT_HEADER, formatTraceparent, newTrace, parseTraceparent } from '../observability/trace.ts';
import type { TransferOutcome } from './saga.ts';

export const legsStream = (region: string): string => `GEOPAY_LEGS_${region.toUpperCase().replace(/-/g, '_')}`;
export const legsDurable = (shard: ShardId): string => {
  const { region, bucket } = shardParts(shard);
  return `legs-${region}-${bucket}`;
};
/** Every leg subject of one shard: its consumer's filter. */
const shardSubjects = (shard: ShardId): string => {
  const { region, bucket } = shardParts(shard);
  return `geopay.legs.${region}.${bucket}.*`;
};
const legSubject = (shard: ShardId, kind: 'credit' | 'outcome'): string => shardSubjects(shard).replace(/\*$/, kind);
export const outcomeSubject = (id: TransferId): string => `geopay.outcomes.${id}`;

/** Each region's legs stream, as the node's bus keeper makes them. */
export const legsStreamSpecs = (regions: readonly Region[], replicas: number): StreamSpec[] => regions.map((region) => ({
  name: legsStream(region), subjects: [`geopay.legs.${region}.>`], replicas, duplicateWindowMs: DEFAULT_DUPLICATE_WINDOW_MS, retention: 'workqueue',
}));

/** How often the consumers are matched to the shards this node owns. */
const RECONCILE_MS = 250;
/**
 * A leg not acked within this is delivered again (a handler is bounded at half of it). Short,
 * because it is also how long legs delivered to an owner that froze (a pause, a partition: its
 * pull was still open) wait before its successor sees them; the relay's copy cannot overtake
 * them (same Nats-Msg-Id). npm run chaos pause-owner: 18-19 s from SIGCONT to everything
 * settled at 30 s, which is this wait; a redelivery of a leg still in progress is a no-op.
 */
const ACK_WAIT_MS = 6_000;
/** The longest wait before a failed leg comes again: after an outage ends, legs move within it. */
const MAX_RETRY_DELAY_MS = 2_000;
/** Deliveries a shard's consumer has out at once: enough for its actors' mailboxes to batch them. */
const MAX_ACK_PENDING = 1_024;
const PULL_BATCH = 128;
/**
 * A pull's lifetime at the server; heartbeats come at half of it and two missed ones make the
 * runner pull again. A consumer's leader lost on a JetStream cluster is noticed within about
 * this long: short, since a leg waits for it, at the cost of an idle pull per shard per 2 s.
 */
const PULL_EXPIRES_MS = 2_000;

type LegMessage =
  | { kind: 'credit'; id: TransferId; sourceId: AccountId; destinationId: AccountId; amount: string; currency: Currency; redelivery: boolean }
  | { kind: 'outcome'; id: TransferId; sourceId: AccountId; refusal: ErrorCode | null };

export interface LegsSettings {
  /** The node's connection to the bus, which makes the legs streams (legsStreamSpecs). */
  keeper: Pick<BusKeeper, 'bus' | 'ready'>;
  /** Every region of the cluster: each has its stream. */
  regions: Region[];
  buckets: number;
  /** 'cross-region': only legs between regions go by the bus; 'all': every leg to another node's shard. */
  scope: 'cross-region' | 'all';
  logger: Logger;
  metrics?: Pick<Metrics, 'busRedeliveries' | 'busFailures'>;
}

export class BusLegs {
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly runners = new Map<ShardId, Promise<ConsumerRunner | undefined>>();
  private reconciling: Promise<void> | undefined;
  private readonly log: Logger;

  constructor(
    private readonly s: LegsSettings,
    private readonly registry: Pick<AccountRegistry, 'applyCredit' | 'settle' | 'isLocal'>,
    private readonly ownership: Pick<Ownership, 'shardIds' | 'isLocal'>,
  ) {
    this.log = s.logger.child({ part: 'legs' });
  }

  private get bus(): Bus | undefined {
    return this.s.keeper.bus;
  }

  /** Starts the consumers of the shards owned here once the bus is there, and follows ownership. */
  start(): void {
    void this.s.keeper.ready().then(() => this.reconcile());
    this.timer = setInterval(() => void this.reconcile(), RECONCILE_MS);
    this.timer.unref();
  }

  /**
   * Does this credit leg travel by the bus? Not when this node owns the destination (it is
   * applied here, no hop); else a leg between regions does, and with scope 'all' any leg.
   */
  carries(t: Pick<CreditLeg, 'sourceId' | 'destinationId'>): boolean {
    if (this.registry.isLocal(t.destinationId)) return false;
    return this.s.scope === 'all' || regionOf(t.sourceId) !== regionOf(t.destinationId);
  }

  /** Publishes the credit leg to the destination's stream; throws while the bus is away (the relay publishes it again). */
  async publishCredit(t: CreditLeg, redelivery: boolean, trace: TraceContext): Promise<void> {
    const msg: LegMessage = { kind: 'credit', id: t.id, sourceId: t.sourceId, destinationId: t.destinationId, amount: t.amount.toString(), currency: t.currency, redelivery };
    await this.publish(shardOf(t.destinationId, this.s.buckets), msg, `${t.id}.credit`, trace);
  }

  /** Tells the node waiting for this transfer, if any, that it settled or returned; at most once. */
  notify(o: TransferOutcome): void {
    if (this.bus?.up) this.bus.notify(outcomeSubject(o.id), JSON.stringify(o));
  }

  /**
   * Listens for the transfer's outcome until stop(). With the bus away it listens to nothing
   * (`listening` false), and the waiting request falls back to reading the row. The notice comes
   * after two commits and four stream hops, long after the subscription reached the server;
   * one missed all the same is made up for by a read at the wait's end.
   */
  watch(id: TransferId, heard: (o: TransferOutcome) => void): { listening: boolean; stop: () => void } {
    if (!this.bus?.up) return { listening: false, stop: () => undefined };
    const stop = this.bus.listen(outcomeSubject(id), (data) => heard(JSON.parse(Buffer.from(data).toString('utf8')) as TransferOutcome));
    return { listening: true, stop };
  }

  /** Messages in each region's stream not yet acked, and the oldest one's age (metrics). */
  async lag(): Promise<{ consumer: string; pending: number; oldestAgeS: number }[]> {
    const bus = this.bus;
    if (!bus?.up) return [];
    const now = Date.now();
    return Promise.all(this.s.regions.map(async (region) => {
      const st = await bus.streamState(legsStream(region));
      return { consumer: `legs-${region}`, pending: st.messages, oldestAgeS: st.firstAt ? Math.max(0, (now - st.firstAt.getTime()) / 1000) : 0 };
    }));
  }

  /** Stops the consumers (each drains its handlers); the connection is the keeper's. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.reconciling;
    const runners = await Promise.all(this.runners.values());
    this.runners.clear();
    await Promise.all(runners.map((r) => r?.stop()));
  }

  /** Starts a consumer for each shard owned here that has none, stops those of shards gone. */
  private reconcile(): Promise<void> {
    if (this.reconciling || !this.bus || this.stopped) return this.reconciling ?? Promise.resolve();
    const bus = this.bus;
    this.reconciling = (async () => {
      const owned = new Set([...this.ownership.shardIds()].filter((s) => this.ownership.isLocal(s)));
      for (const [shard, runner] of [...this.runners]) {
        if (owned.has(shard)) continue;
        this.runners.delete(shard);
        void runner.then((r) => r?.stop());
      }
      const starts: Promise<unknown>[] = [];
      for (const shard of owned) {
        if (this.runners.has(shard) || !this.s.regions.includes(shardParts(shard).region)) continue;
        const started = this.startConsumer(bus, shard);
        this.runners.set(shard, started);
        starts.push(started.then((r) => { if (!r && this.runners.get(shard) === started) this.runners.delete(shard); }));
      }
      await Promise.all(starts);
    })().finally(() => { this.reconciling = undefined; });
    return this.reconciling;
  }

  private async startConsumer(bus: Bus, shard: ShardId): Promise<ConsumerRunner | undefined> {
    const stream = legsStream(shardParts(shard).region);
    const durable = legsDurable(shard);
    try {
      await bus.ensureConsumer(stream, { durable, filterSubject: shardSubjects(shard), ackWaitMs: ACK_WAIT_MS, maxAckPending: MAX_ACK_PENDING });
      return await bus.consume(stream, durable, (m) => this.handle(m), {
        batchSize: PULL_BATCH, concurrency: PULL_BATCH, retryDelayMs: 250, maxRetryDelayMs: MAX_RETRY_DELAY_MS, handlerTimeoutMs: ACK_WAIT_MS / 2, pullExpiresMs: PULL_EXPIRES_MS,
        // A lost ack costs one redelivery after the ack wait, which the inbound leg makes a no-op:
        // cheaper than a confirmed ack's round trip on every leg.
        confirmAcks: false,
        onFailure: (f) => this.s.metrics?.busFailures.inc({ consumer: `legs-${shardParts(shard).region}`, reason: f.reason }),
      });
    } catch (err) {
      this.log.warn({ err, shard }, 'legs consumer not started; the next reconcile tries again');
      return undefined;
    }
  }

  private async publish(shard: ShardId, msg: LegMessage, msgId: string, trace: TraceContext): Promise<void> {
    const bus = this.bus;
    // Fails fast while away: the row waits in PostgreSQL for the relay, no publish piles up here.
    if (!bus?.up) throw new Error('the bus is not connected');
    await bus.publish(legSubject(shard, msg.kind), JSON.stringify(msg), { msgId, headers: { [TRACEPARENT_HEADER]: formatTraceparent(trace) } });
  }

  /** One leg: applied (or found applied), its next step published, then acked; anything else is retried. */
  private async handle(m: BusMessage): Promise<HandlerOutcome> {
    const msg = JSON.parse(Buffer.from(m.data).toString('utf8')) as LegMessage;
    const trace = parseTraceparent(m.header(TRACEPARENT_HEADER)) ?? newTrace();
    const again = m.deliveryCount > 1;
    if (again) this.s.metrics?.busRedeliveries.inc({ consumer: `legs-${regionOf(msg.kind === 'credit' ? msg.destinationId : msg.sourceId)}` });
    if (msg.kind === 'outcome') {
      const r = await this.registry.settle(msg, { refusal: msg.refusal }, again, trace);
      return r.type === 'error' ? this.retry(msg, r.error.code, m) : 'ack';
    }
    const leg: CreditLeg = { id: msg.id, sourceId: msg.sourceId, destinationId: msg.destinationId, amount: BigInt(msg.amount), currency: msg.currency };
    const r = await this.registry.applyCredit(leg, again || msg.redelivery, trace);
    if (r.type === 'error') return this.retry(msg, r.error.code, m);
    // A domestic credit (scope 'all') settled the row in its commit; a cross-region one answers the outcome.
    if (r.type === 'done' && r.leg) await this.publishOutcome(leg, r.leg, trace);
    return 'ack';
  }

  private publishOutcome(t: CreditLeg, leg: LegOutcome, trace: TraceContext): Promise<void> {
    return this.publish(shardOf(t.sourceId, this.s.buckets), { kind: 'outcome', id: t.id, sourceId: t.sourceId, refusal: leg.refusal }, `${t.id}.outcome`, trace);
  }

  private retry(msg: LegMessage, code: string, m: BusMessage): HandlerOutcome {
    this.log.debug({ transfer: msg.id, leg: msg.kind, code, deliveryCount: m.deliveryCount }, 'leg not applied; it is delivered again');
    return 'retry';
  }
}
