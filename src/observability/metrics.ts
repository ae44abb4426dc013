// One node's Prometheus metrics, on prom-client: a registry per node (tests run several nodes
// in one process), default labels {node, region}, and every family an operator needs (see
// docs/monitoring.md). Labels are bounded: routes are templates, codes come from a closed
// list, and no account or tenant id is ever a label (the ops page shows hot accounts).
//
// Parts that count (the writer, leases, the relay...) are handed this object and push to it;
// what is read at scrape time (resident actors, pool, shards) is a `source` set by the
// composition root once the part exists.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const COUNT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
const TOP_MAILBOXES = 5;

/** What the metrics read at scrape time; each is set once its part exists (undefined: not in this node). */
export interface MetricSources {
  residentActors?: () => number;
  /** Mailbox depths of the deepest resident actors, deepest first. */
  deepestMailboxes?: (n: number) => number[];
  writerQueue?: () => number;
  shardsOwned?: () => number;
  shardsWithoutOwner?: () => number;
  membersByRegion?: () => Record<string, number>;
  redisMasters?: () => Promise<{ configured: number; reachable: number }>;
  pool?: () => { total: number; idle: number; waiting: number; max: number };
  /** Transfers in flight and the oldest one's age, from an indexed query (cached by the caller). */
  inFlight?: () => Promise<{ count: number; oldestAgeS: number }>;
  /** Whether the control database (tenants, keys, limits) answered its last read. */
  controlPlaneReachable?: () => boolean;
  /** Webhook deliveries pending, every tenant's (cached by the caller). */
  webhookBacklog?: () => Promise<number>;
  /** Each bus consumer's messages not yet acked and the oldest one's age (the legs streams). */
  busLag?: () => Promise<{ consumer: string; pending: number; oldestAgeS: number }[]>;
}

export type StatusClass = '2xx' | '3xx' | '4xx' | '5xx';
export type MoneyKind = 'transfer' | 'deposit' | 'withdrawal' | 'refund' | 'capture';
export type MoneyOutcome = 'settled' | 'pending' | 'returned' | 'refused';
export type ForwardOutcome = 'ok' | 'unreachable' | 'timeout' | 'error';
export type RedisClient = 'leases' | 'membership' | 'rate_limit';

export class Metrics {
  readonly registry = new Registry();
  readonly sources: MetricSources = {};

  readonly httpRequests: Counter<'route' | 'method' | 'status_class'>;
  readonly httpDuration: Histogram<'route' | 'method' | 'status_class'>;
  readonly httpErrors: Counter<'code' | 'status'>;
  readonly rateLimited: Counter;
  readonly idempotentReplays: Counter<'operation'>;
  readonly transfers: Counter<'kind' | 'outcome'>;
  readonly holds: Counter<'action'>;
  readonly mailboxDepth: Histogram;
  readonly batchCommands: Histogram;
  readonly commitWriteSets: Histogram;
  readonly commitDuration: Histogram;
  readonly commitStatements: Counter;
  readonly batchesCommitted: Counter;
  readonly leaseOps: Counter<'op' | 'result'>;
  readonly leaseLosses: Counter;
  readonly fencedWrites: Counter;
  readonly forwarded: Counter<'outcome'>;
  readonly redisFailures: Counter<'client'>;
  readonly relayRedeliveries: Counter;
  readonly returns: Counter;
  readonly controlPlaneStale: Counter;
  readonly webhookAttempts: Counter<'outcome'>;
  readonly webhookDelivery: Histogram;
  readonly busRedeliveries: Counter<'consumer'>;
  readonly busFailures: Counter<'consumer' | 'reason'>;

  constructor(labels: { node: string; region: string }) {
    this.registry.setDefaultLabels(labels);
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers });
    const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: readonly L[] = []) =>
      new Histogram<L>({ name, help, buckets, labelNames, registers });

    const http = ['route', 'method', 'status_class'] as const;
    this.httpRequests = counter('geopay_http_requests_total', 'HTTP requests answered, by route template, method and status class.', http);
    this.httpDuration = histogram('geopay_http_request_duration_seconds', 'HTTP request latency, from arrival to the answer sent.', LATENCY_BUCKETS, http);
    this.httpErrors = counter('geopay_http_errors_total', 'Problem answers (4xx and 5xx) by stable error code and status.', ['code', 'status'] as const);
    this.rateLimited = counter('geopay_rate_limited_total', 'Requests refused by the tenant rate limit (429).');
    this.idempotentReplays = counter('geopay_idempotent_replays_total', 'Requests answered from an idempotency key\'s stored answer.', ['operation'] as const);
    this.transfers = counter('geopay_transfers_total', 'Money movements acknowledged, by kind and outcome (replays not counted).', ['kind', 'outcome'] as const);
    this.holds = counter('geopay_holds_total', 'Hold changes committed, by action (authorize, capture, void, expire).', ['action'] as const);

    this.mailboxDepth = histogram('geopay_mailbox_depth', 'Mailbox depth each arriving command finds at its account actor.', [0, ...COUNT_BUCKETS]);
    this.batchCommands = histogram('geopay_actor_batch_commands', 'Commands decided and committed together by one actor.', COUNT_BUCKETS);
    this.commitWriteSets = histogram('geopay_commit_write_sets', 'Actor write sets carried by one commit statement.', COUNT_BUCKETS);
    this.commitDuration = histogram('geopay_commit_duration_seconds', 'Commit statement latency (one transaction).', LATENCY_BUCKETS);
    this.commitStatements = counter('geopay_commit_statements_total', 'Commit statements sent (each one transaction).');
    this.batchesCommitted = counter('geopay_actor_batches_committed_total', 'Actor write sets committed.');

    this.leaseOps = counter('geopay_lease_operations_total', 'Shard lease operations on the Redis masters, by result.', ['op', 'result'] as const);
    this.leaseLosses = counter('geopay_lease_losses_total', 'Shard leases lost (not extended in time, or taken).');
    this.fencedWrites = counter('geopay_fenced_writes_total', 'Commits refused by the shard\'s fencing epoch in PostgreSQL.');
    this.forwarded = counter('geopay_forwarded_requests_total', 'Requests forwarded to the owner node, by outcome.', ['outcome'] as const);
    this.redisFailures = counter('geopay_redis_command_failures_total', 'Redis commands that failed or timed out, by client.', ['client'] as const);

    this.relayRedeliveries = counter('geopay_relay_redeliveries_total', 'Transfer legs re-delivered by the relay.');
    this.returns = counter('geopay_returns_total', 'Refused credit legs returned to the source account.');
    this.controlPlaneStale = counter('geopay_control_plane_stale_answers_total', 'Keys and limits answered from a value past CONTROL_CACHE_MS, the control database out of reach.');

    this.webhookAttempts = counter('geopay_webhook_attempts_total', 'Webhook delivery attempts, by outcome: delivered (2xx), failed (anything else, retried until the horizon, or 410).', ['outcome'] as const);
    this.webhookDelivery = histogram('geopay_webhook_delivery_seconds', 'From a webhook delivery\'s creation (its event reached the queue) to the receiver\'s 2xx, retries included.', DELIVERY_BUCKETS);

    this.busRedeliveries = counter('geopay_bus_redeliveries_total', 'Bus messages this node was delivered more than once (a redelivery after a failure, an ack wait or a restart), by consumer.', ['consumer'] as const);
    this.busFailures = counter('geopay_bus_handler_failures_total', 'Bus deliveries not acked by this node, by consumer and reason (retry, error, timeout); each is delivered again, never dropped.', ['consumer', 'reason'] as const);

    this.scrapeGauges();
  }

  /** prom-client's process metrics: CPU, memory, event-loop lag, GC, heap. Once per process node. */
  collectProcessMetrics(): void {
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
  }

  /** The exposition, in Prometheus text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Gauges read at scrape time from `sources`; one that is not set reads nothing (absent). */
  private scrapeGauges(): void {
    const registers = [this.registry];
    const src = this.sources;
    const simple = (name: string, help: string, read: () => number | undefined) =>
      new Gauge({ name, help, registers, collect() { const v = read(); if (v !== undefined) this.set(v); } });
    simple('geopay_actors_resident', 'Account actors in memory.', () => src.residentActors?.());
    simple('geopay_writer_queue_length', 'Write sets waiting for a commit statement.', () => src.writerQueue?.());
    simple('geopay_shards_owned', 'Shards this node owns.', () => src.shardsOwned?.());
    simple('geopay_shards_without_owner', 'Shards with no live owner, as this node sees the placement.', () => src.shardsWithoutOwner?.());
    simple('geopay_control_plane_reachable', 'Whether the control database answered its last read (1) or not (0).', () => {
      const up = src.controlPlaneReachable?.();
      return up === undefined ? undefined : Number(up);
    });
    new Gauge({
      name: 'geopay_mailbox_depth_top', help: 'Depths of the deepest resident mailboxes on this node, by rank (1 = deepest).', labelNames: ['rank'], registers,
      collect() {
        this.reset();
        const depths = src.deepestMailboxes?.(TOP_MAILBOXES) ?? [];
        for (let i = 0; i < TOP_MAILBOXES; i++) this.set({ rank: String(i + 1) }, depths[i] ?? 0);
      },
    });
    new Gauge({
      // member_region, not region: that label is the reporting node's own (a default label).
      name: 'geopay_cluster_members', help: 'Live cluster members by their region, as this node sees them.', labelNames: ['member_region'], registers,
      collect() {
        this.reset();
        for (const [region, n] of Object.entries(src.membersByRegion?.() ?? {})) this.set({ member_region: region }, n);
      },
    });
    this.poolGauges();
    this.asyncGauges();
  }

  private poolGauges(): void {
    const registers = [this.registry];
    const src = this.sources;
    new Gauge({
      name: 'geopay_pg_pool_connections', help: 'PostgreSQL pool connections: total open, idle, and requests waiting for one.', labelNames: ['state'], registers,
      collect() {
        const p = src.pool?.();
        if (!p) return;
        this.set({ state: 'total' }, p.total);
        this.set({ state: 'idle' }, p.idle);
        this.set({ state: 'waiting' }, p.waiting);
      },
    });
    new Gauge({ name: 'geopay_pg_pool_max', help: 'PostgreSQL pool size limit.', registers, collect() { const p = src.pool?.(); if (p) this.set(p.max); } });
  }

  /** Gauges that ask Redis or PostgreSQL: bounded by their clients' timeouts, never failing the scrape. */
  private asyncGauges(): void {
    const registers = [this.registry];
    const src = this.sources;
    // Both gauges of a pair are collected concurrently by one scrape: they share one question.
    const masters = coalesced(async () => (src.redisMasters ? src.redisMasters() : undefined));
    const inFlight = coalesced(async () => (src.inFlight ? src.inFlight().catch(() => undefined) : undefined));
    const pair = (read: () => Promise<Record<string, number> | undefined>, field: string, name: string, help: string) =>
      new Gauge({ name, help, registers, async collect() { const v = (await read())?.[field]; if (v !== undefined) this.set(v); } });
    pair(masters, 'configured', 'geopay_redis_masters_configured', 'Redis lease masters configured.');
    pair(masters, 'reachable', 'geopay_redis_masters_reachable', 'Redis lease masters answering a PING.');
    // The database down: the pair is absent for that scrape; the pool and error metrics say why.
    pair(inFlight, 'count', 'geopay_transfers_in_flight', 'Transfers debited and not yet settled or returned (shards of this database).');
    pair(inFlight, 'oldestAgeS', 'geopay_transfer_oldest_in_flight_seconds', 'Age of the oldest transfer in flight (0 when none).');
    new Gauge({
      name: 'geopay_webhook_backlog', help: 'Webhook deliveries waiting for a 2xx (the control database\'s queue, every tenant\'s).', registers,
      async collect() { const n = await src.webhookBacklog?.().catch(() => undefined); if (n !== undefined) this.set(n); },
    });
    // The bus away: both absent for that scrape (a stale figure would hide the outage).
    const lag = coalesced(async () => (src.busLag ? src.busLag().catch(() => undefined) : undefined));
    const byConsumer = (name: string, help: string, field: 'pending' | 'oldestAgeS') => new Gauge({
      name, help, labelNames: ['consumer'], registers,
      async collect() {
        this.reset();
        for (const c of (await lag()) ?? []) this.set({ consumer: c.consumer }, c[field]);
      },
    });
    byConsumer('geopay_bus_consumer_pending', 'Messages of a bus consumer not yet acked (legs-<region>: the region\'s legs stream, every shard\'s).', 'pending');
    byConsumer('geopay_bus_oldest_pending_seconds', 'Age of the oldest message of a bus consumer not yet acked (0 when none).', 'oldestAgeS');
  }
}

/** A webhook is delivered in milliseconds to days: its retries span WEBHOOK_RETRY_HORIZON_MS. */
const DELIVERY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 1800, 3600, 21600, 86400, 259200];

/** One call in progress at a time: callers that arrive meanwhile share its answer. */
function coalesced<T>(fn: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => (pending ??= fn().finally(() => { pending = undefined; }));
}

/** A status code's class label. */
export const statusClass = (status: number): StatusClass =>
  status >= 500 ? '5xx' : status >= 400 ? '4xx' : status >= 300 ? '3xx' : '2xx';
