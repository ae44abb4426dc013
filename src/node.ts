// One geopay node, assembled: config -> PostgreSQL (or the embedded PGlite) -> migrations ->
// shard ownership -> account actors and relay -> HTTP. main.ts runs it as a process; tests
// run it in-process against their own database.
import { Metrics } from './observability/metrics.ts';
import { MetricsSampler } from './observability/sampler.ts';
import type { MetricSources } from './observability/metrics.ts';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import type { Logger } from 'pino';
import type { Config } from '../config/settings.ts';
import { ConfigError, parseRegionDatabaseUrls } from '../config/settings.ts';
import { createPool, migrate } from './persistence/db.ts';
import { pinShardBuckets, shardMapRefusal } from './persistence/shard-map.ts';
import type { Pool } from './persistence/db.ts';
import type { CommitObserver } from './persistence/journal.ts';
import { makeRepositories, regionRepositories } from './persistence/repositories.ts';
import type { RegionRepositories, Repositories } from './persistence/repositories.ts';
import { RegionDatabases } from './persistence/region-databases.ts';
import { bumpEpoch } from './persistence/shards.ts';
import type { Region, ShardId } from './domain/ids.ts';
import { shardParts } from './domain/ids.ts';
import { RegionReads } from './payments/region-reads.ts';
import type { WebhookKeyedWrites } from './payments/webhooks.ts';
import { createWebhookEndpointOnce, rotateWebhookSecretOnce } from './persistence/queries.ts';
import { webhookRepositories } from './persistence/webhooks.ts';
import type { WebhookStore } from './persistence/webhooks.ts';
import { enqueueEvent } from './webhooks/endpoints.ts';
import { OutboxFeed, webhookEventOf } from './payments/event-feed.ts';
import type { EventSource, OutboxFeedDeps } from './payments/event-feed.ts';
import { eventsStreamSpec, publishEvent } from './payments/event-bus.ts';
import { BusLegs, legsStreamSpecs } from './payments/legs.ts';
import { BusKeeper, parseNatsUrls } from './bus/index.ts';
import type { EventInterest, StoredEvent } from './persistence/events.ts';
import { TtlCache } from './payments/ttl-cache.ts';
import { DEFAULT_WEBHOOK_SETTINGS } from './webhooks/config.ts';
import type { WebhookSettings } from './webhooks/config.ts';
import { WebhookDispatcher } from './webhooks/dispatcher.ts';
import { systemResolver } from './webhooks/address.ts';
import type { EventStreamSettings } from './payments/events.ts';
import type { Redis } from 'ioredis';
import { startEmbeddedPostgres } from './persistence/embedded.ts';
import { connectRedis, createRedis } from './persistence/redis.ts';
import type { EmbeddedPostgres } from './persistence/embedded.ts';
import { SingleNodeOwnership } from './cluster/ownership.ts';
import type { Ownership } from './cluster/ownership.ts';
import { ClusterOwnership } from './cluster/cluster-ownership.ts';
import { LeaseKeeper } from './cluster/leases.ts';
import { Membership } from './cluster/membership.ts';
import { Forwarder } from './cluster/forward.ts';
import { AccountRegistry } from './actors/registry.ts';
import { GroupWriter } from './persistence/writer.ts';
import { Relay } from './payments/relay.ts';
import type { RelayOptions } from './payments/relay.ts';
import { buildPayments } from './payments/index.ts';
import { OPS_WINDOW_MS } from './payments/ops.ts';
import type { Payments } from './payments/index.ts';
import { buildApp } from './http/app.ts';
import { startInternalListener } from './http/internal-app.ts';
import type { InternalListener } from './http/internal-app.ts';
import { listen } from './http/listen.ts';
import { rejectionAnswer } from './http/errors.ts';
import { routesFor } from './http/routes/index.ts';
import { setupBaseline } from './baseline/engine.ts';
import { baselineRoutes } from './baseline/routes.ts';

export interface GeopayNode {
  app: FastifyInstance;
  url: string;
  /** The node-to-node listener's URL (advertised to peers); undefined without CLUSTER_SECRET. */
  internalUrl: string | undefined;
  pool: Pool;
  registry: AccountRegistry;
  relay: Relay;
  /** The home region's writer. */
  writer: GroupWriter;
  /** Each region database this node uses: the home one, and others it writes in failover. */
  dbs: RegionDatabases<RegionStore>;
  ownership: Ownership;
  payments: Payments;
  membership: Membership | undefined;
  metrics: Metrics;
  /** The legs on the bus, when they travel by it (NATS_URLS, LEGS_TRANSPORT=bus, a cluster). */
  legs: BusLegs | undefined;
  /** Set when this start created the admin key (printed once by main). */
  createdAdminKey: string | undefined;
  /** Graceful: stop intake, drain mailboxes, snapshot, close pools. */
  stop(): Promise<void>;
}

export function rootLogger(cfg: Config): Logger {
  return pino({
    level: cfg.logLevel,
    base: { node: cfg.nodeId, region: cfg.region },
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'key', 'adminApiKey', '*.key'], censor: '[redacted]' },
  });
}

export async function startNode(cfg: Config, opts: { logger?: Logger; onCommit?: CommitObserver; clock?: () => number; events?: Partial<EventStreamSettings> } = {}): Promise<GeopayNode> {
  // FAULT_CLOCK_OFFSET_MS (tests only) makes this host's clock wrong, as a real one can be.
  const offsetMs = cfg.faultClockOffsetMs;
  const clock = opts.clock ?? (offsetMs === 0 ? Date.now : () => Date.now() + offsetMs);
  const logger = opts.logger ?? rootLogger(cfg);
  const { pool, control, embedded, homeUrl } = await openDatabase(cfg, logger);
  const metrics = new Metrics({ node: cfg.nodeId, region: cfg.region });
  metrics.collectProcessMetrics();
  const dbs = regionDatabases(cfg, { pool, url: homeUrl }, embedded !== undefined, opts.onCommit, metrics, logger);
  // Single node or cluster, the composition is the same from here: ownership -> actors ->
  // payments -> HTTP; assemble() keeps this function to the order of the steps.
  const parts = await assemble(cfg, dbs, logger, clock, metrics);
  const { ownership, cluster, single, registry } = parts;
  const { regions, repos } = repositoriesOf(dbs, ownership, cluster, { control, homePool: pool });
  // The ops page's transfers/s and p99: this node's own counters, sampled every second.
  const sampler = new MetricsSampler(metrics);
  sampler.start();
  const ops = { window: () => sampler.delta(OPS_WINDOW_MS), peers: cluster?.forwarder };
  const webhooks = webhookParts(cfg, control, logger, metrics);
  const { keeper, legs } = busParts(cfg, parts, metrics, logger);
  const payments = buildPayments({ config: cfg, registry, ownership, repos, regions, logger, clock, metrics, ops, webhooks, events: opts.events, legs, forwarder: cluster?.forwarder });
  const createdAdminKey = await payments.tenants.ensureAdminKey(cfg.adminApiKey);
  if (createdAdminKey && embedded) {
    // Embedded (development) mode only: keep the key beside the data it guards, readable by
    // this user alone, so a newcomer's walk-through can read it back.
    writeFileSync(join(cfg.dataDir, 'admin-key.txt'), `${createdAdminKey}\n`, { mode: 0o600 });
  }

  // The relay and the hold sweeper act on the shards this node owns; others have their owner.
  // A test's injected clock is virtual time for everyone, so due holds are judged by it; in
  // production (FAULT_CLOCK_OFFSET_MS included) the database's clock judges them.
  const sources = () => workSources(ownership, dbs);
  const relay = new Relay(repos, registry, relayOptions(cfg, { clock, sources, virtualNow: opts.clock, metrics, legs }), logger);
  const feed = eventFeeds(webhooks, { sources, registry, keeper }, cfg, logger);
  readAtScrape(metrics, { poolMax: embedded ? 1 : cfg.pgPoolMax, dbs, registry, ownership, cluster, payments, legs });

  let accepting = true;
  const redis = await rateLimitRedis(cfg, logger);
  const routes = cfg.engine === 'baseline' ? routesFor([baselineRoutes(pool, clock)]) : routesFor('geopay');
  const ctx = { config: cfg, logger, payments, ready: () => accepting, metrics, redis };
  const app = await buildApp(ctx, routes);
  const url = await listen(app, cfg.host, cfg.port);
  // Peers forward to the internal listener, never to the public port: that is what membership advertises.
  const internal = await startInternalListener(ctx, routes.internal);
  const membership = cluster ? await joinCluster(cluster, cfg, internal, logger, metrics) : undefined;

  // The relay's first pass re-delivers what a crash left in flight, at once.
  relay.start();
  legs?.start();
  webhooks.dispatcher.start();
  feed.start();
  const cleanup = startKeyCleanup(repos, cfg, logger);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      accepting = false;
      relay.stop();
      sampler.stop();
      // The legs' consumers first: the feed closes the bus connection they use.
      await legs?.stop();
      await feed.stop();
      await webhooks.dispatcher.stop();
      clearInterval(cleanup);
      // Stop taking requests; those in progress finish (bounded by the request timeout).
      await Promise.all([app.close(), internal?.app.close()]);
      redis?.disconnect();
      await registry.drain(cfg.shutdownTimeoutMs);
      payments.saga.clear();
      single?.stop();
      // Leases go back only after the actors drained and snapshotted: the next owner starts clean.
      if (cluster) {
        await cluster.own.stop();
        await membership?.stop();
        await cluster.leases.stop();
        await cluster.forwarder.close();
      }
      // The first answers of the last transfers, handed to their batched write, are written.
      await Promise.all(dbs.all().map(({ parts: p }) => p.repos.keys.answersStored()));
      await dbs.close();
      await pool.end();
      if (control !== pool) await control.end();
      if (embedded) await embedded.close();
      logger.info('node stopped');
    })();
    return stopping;
  };

  return { app, url, internalUrl: internal?.url, pool, registry, relay, writer: dbs.of(dbs.home).writer, dbs, createdAdminKey, stop, ownership, payments, membership, metrics, legs };
}

function relayOptions(cfg: Config, p: Pick<RelayOptions, 'clock' | 'sources' | 'virtualNow' | 'metrics' | 'legs'>): RelayOptions {
  const { virtualNow, legs, ...rest } = p;
  return {
    intervalMs: cfg.relayIntervalMs, minAgeMs: cfg.relayMinAgeMs, maxBackoffMs: cfg.relayMaxBackoffMs, batch: 500, ...rest,
    ...(virtualNow ? { virtualNow } : {}), ...(legs ? { legs } : {}),
  };
}

/**
 * With NATS_URLS, the node's one connection to the bus (its streams made once it answers), and
 * on a cluster with LEGS_TRANSPORT=bus the legs that travel by it (src/payments/legs.ts).
 */
function busParts(cfg: Config, parts: { cluster: ClusterParts | undefined; registry: AccountRegistry; ownership: Ownership }, metrics: Metrics, logger: Logger): { keeper: BusKeeper | undefined; legs: BusLegs | undefined } {
  const urls = parseNatsUrls(cfg.natsUrls);
  if (urls.length === 0) return { keeper: undefined, legs: undefined };
  const withLegs = parts.cluster !== undefined && cfg.legsTransport === 'bus';
  const regions = [...new Set([...(cfg.regions ? cfg.regions.split(',') : []), cfg.region])] as Region[];
  const keeper = new BusKeeper({
    urls, name: cfg.nodeId, logger: logger.child({ part: 'bus' }),
    streams: [eventsStreamSpec(cfg.natsReplicas), ...(withLegs ? legsStreamSpecs(regions, cfg.natsReplicas) : [])],
  });
  const legs = withLegs
    ? new BusLegs({ keeper, regions, buckets: cfg.shardBuckets, scope: cfg.legsScope as 'cross-region' | 'all', logger, metrics }, parts.registry, parts.ownership)
    : undefined;
  return { keeper, legs };
}

/** What the metrics read at scrape time; committed hold changes and returns are counted as they commit. */
function readAtScrape(metrics: Metrics, p: { poolMax: number; dbs: RegionDatabases<RegionStore>; registry: AccountRegistry; ownership: Ownership; cluster: ClusterParts | undefined; payments: Payments; legs: BusLegs | undefined }): void {
  const { dbs, registry, ownership, cluster } = p;
  Object.assign(metrics.sources, {
    residentActors: () => registry.residentCount(),
    deepestMailboxes: (n: number) => registry.deepestMailboxes(n),
    writerQueue: () => dbs.all().reduce((n, { parts: r }) => n + r.writer.queueLength, 0),
    shardsOwned: () => ownership.shards().length,
    shardsWithoutOwner: () => cluster?.own.unplaced() ?? 0,
    membersByRegion: () => {
      const by: Record<string, number> = {};
      for (const m of ownership.members()) by[m.region] = (by[m.region] ?? 0) + 1;
      return by;
    },
    pool: () => ({ ...dbs.homeConnections(), max: p.poolMax }),
    inFlight: () => p.payments.inFlight(),
    webhookBacklog: () => p.payments.webhookBacklog(),
    controlPlaneReachable: () => p.payments.tenants.controlPlaneReachable(),
    ...(cluster ? { redisMasters: () => cluster.leases.mastersReachable() } : {}),
    ...(p.legs ? { busLag: () => p.legs!.lag() } : {}),
  } satisfies MetricSources);
  registry.onCommitted((ws) => {
    if (ws.newHolds.length > 0) metrics.holds.inc({ action: 'authorize' }, ws.newHolds.length);
    for (const u of ws.holdUpdates) if (u.state !== 'held') metrics.holds.inc({ action: HOLD_ACTION[u.state] });
    for (const u of ws.transferUpdates) if (u.to === 'returned') metrics.returns.inc();
  });
}

const HOLD_ACTION = { captured: 'capture', voided: 'void', expired: 'expire' } as const;

/** The first URL carries the rate-limit counters; a Redis that is down does not stop the node. */
async function rateLimitRedis(cfg: Config, logger: Logger): Promise<Redis | undefined> {
  const redisUrl = cfg.redisUrls.split(',')[0]?.trim();
  const redis = redisUrl ? createRedis(redisUrl, { commandTimeoutMs: cfg.redisCommandTimeoutMs, logger }) : undefined;
  if (redis && !(await connectRedis(redis, 2_000))) logger.warn('redis not reachable at start, rate limits fail open until it is');
  return redis;
}

/** Idempotency keys past their retention are deleted in the background. */
function startKeyCleanup(repos: Repositories, cfg: Config, logger: Logger): NodeJS.Timeout {
  const cleanup = setInterval(() => {
    repos.keys.deleteExpired(cfg.idempotencyRetentionMs)
      .then((n) => { if (n > 0) logger.info({ deleted: n }, 'expired idempotency keys deleted'); })
      .catch((err: unknown) => logger.warn({ err }, 'idempotency cleanup failed'));
  }, cfg.idempotencyCleanupMs);
  cleanup.unref();
  return cleanup;
}

/**
 * The embedded PGlite when no DATABASE_URL is set, the home pool and the control database's, the
 * migrations applied to each. Readiness asks the home database alone: payments go on without the
 * control plane (keys already seen are cached), so a control outage must not take nodes out.
 */
async function openDatabase(cfg: Config, logger: Logger): Promise<{ pool: Pool; control: Pool; embedded: EmbeddedPostgres | undefined; homeUrl: string }> {
  let embedded: EmbeddedPostgres | undefined;
  let connectionString = cfg.databaseUrl;
  if (!connectionString) {
    embedded = await startEmbeddedPostgres({ dataDir: cfg.dataDir });
    connectionString = embedded.connectionString;
    logger.info({ dataDir: cfg.dataDir }, 'embedded PostgreSQL (PGlite) started');
  }
  const pool = createPool({ connectionString, max: poolSizes(cfg, embedded !== undefined).main, statementTimeoutMs: cfg.pgStatementTimeoutMs, logger });
  await migrate(pool, logger);
  // Before any shard is taken: a node hashing accounts into another bucket count would be a
  // second writer of them. Refused like a bad setting (main exits 2).
  const shardMap = await pinShardBuckets(pool, cfg.shardBuckets);
  if (shardMap.kind === 'disagrees') {
    await pool.end();
    await embedded?.close();
    throw new ConfigError(shardMapRefusal(cfg.shardBuckets, shardMap));
  }
  if (cfg.engine === 'baseline') await setupBaseline(pool, logger);
  const control = await openControlDatabase(cfg, connectionString, pool, logger).catch(async (err: unknown) => {
    await pool.end();
    await embedded?.close();
    throw err;
  });
  return { pool, control, embedded, homeUrl: connectionString };
}

/**
 * Tenants, keys and limits are read once per key per CONTROL_CACHE_MS and written by admins:
 * a few connections carry them, and max_connections is shared by every pool of every node.
 */
const CONTROL_POOL_MAX = 2;

/** The control database's pool, migrated: the home pool itself unless CONTROL_DATABASE_URL names another database. */
async function openControlDatabase(cfg: Config, homeUrl: string, home: Pool, logger: Logger): Promise<Pool> {
  if (!cfg.controlDatabaseUrl || cfg.controlDatabaseUrl === homeUrl) return home;
  const log = logger.child({ database: 'control' });
  const control = createPool({ connectionString: cfg.controlDatabaseUrl, max: CONTROL_POOL_MAX, statementTimeoutMs: cfg.pgStatementTimeoutMs, logger: log });
  try {
    // Every migration runs on every database; the payment tables stay empty here.
    await migrate(control, log);
  } catch (err) {
    await control.end();
    throw err;
  }
  return control;
}

/** Heartbeats this node's internal URL and starts placing shards; once the node listens. */
async function joinCluster(cluster: ClusterParts, cfg: Config, internal: InternalListener | undefined, logger: Logger, metrics: Metrics): Promise<Membership> {
  // Cluster mode needs CLUSTER_SECRET, and with it the internal listener always starts.
  assert.ok(internal, 'a clustered node has an internal listener');
  const { url } = internal;
  // A member is gone after min(lease TTL, 3 heartbeats): its shards are re-placed about when
  // their leases expire, not later (at least 2 heartbeats, so one late beat moves nothing).
  const membership = new Membership({
    masters: cluster.leases.masters, nodeId: cfg.nodeId, region: cfg.region, url,
    heartbeatMs: cfg.heartbeatMs, ttlMs: Math.max(2 * cfg.heartbeatMs, Math.min(cfg.leaseTtlMs, 3 * cfg.heartbeatMs)), keyPrefix: cfg.redisKeyPrefix, logger, metrics,
  });
  await membership.start();
  await cluster.own.start(membership);
  return membership;
}

interface ClusterParts { leases: LeaseKeeper; own: ClusterOwnership; forwarder: Forwarder }

/**
 * Shard ownership (this node alone, or Redis leases over several masters when REDIS_URLS and
 * CLUSTER_SECRET are set), the node-wide writer and the account registry, wired together.
 */
async function assemble(cfg: Config, dbs: RegionDatabases<RegionStore>, logger: Logger, clock: () => number, metrics: Metrics) {
  const pool = dbs.pool(dbs.home);
  // Cluster mode: several Redis masters hold the shard leases, and a shared secret lets the
  // nodes forward requests to each other. Otherwise this node owns every shard.
  const redisUrls = cfg.redisUrls.split(',').map((u) => u.trim()).filter(Boolean);
  const clustered = redisUrls.length > 0 && cfg.clusterSecret !== '';
  let ownership: Ownership;
  let cluster: ClusterParts | undefined;
  let single: SingleNodeOwnership | undefined;
  if (clustered) {
    const leases = new LeaseKeeper({ redisUrls, nodeId: cfg.nodeId, ttlMs: cfg.leaseTtlMs, keyPrefix: cfg.redisKeyPrefix, commandTimeoutMs: cfg.redisCommandTimeoutMs, logger, metrics });
    await leases.start();
    const regions = cfg.regions ? cfg.regions.split(',') : [cfg.region];
    if (!regions.includes(cfg.region)) regions.push(cfg.region);
    // A shard's epoch lives in its region's database, migrated before this node's first write there.
    const bump = async (shard: ShardId, nodeId: string): Promise<bigint> => {
      const { region } = shardParts(shard);
      await dbs.prepare(region);
      return bumpEpoch(dbs.pool(region), shard, nodeId);
    };
    const own = new ClusterOwnership(bump, leases, {
      nodeId: cfg.nodeId, region: cfg.region, regions, buckets: cfg.shardBuckets, failover: cfg.regionFailover as 'allow' | 'deny',
      failoverGraceMs: cfg.regionFailoverGraceMs, rebalanceMs: cfg.heartbeatMs, handOverTimeoutMs: cfg.shutdownTimeoutMs,
    }, logger);
    cluster = { leases, own, forwarder: new Forwarder({ secret: cfg.clusterSecret, timeoutMs: cfg.forwardTimeoutMs, logger, metrics, outcomeWaitMs: cfg.transferWaitMs }) };
    ownership = own;
  } else {
    single = new SingleNodeOwnership(pool, cfg.nodeId, cfg.region, logger, cfg.epochCheckMs);
    await single.start(cfg.shardBuckets);
    ownership = single;
  }
  const registry = new AccountRegistry(dbs, ownership, cfg, logger, clock, cluster?.forwarder, metrics);
  cluster?.own.bind({ lost: (shard) => registry.retireShard(shard), drain: (shard) => registry.drainShard(shard, cfg.shutdownTimeoutMs) });
  single?.bind({ lost: (shard) => registry.retireShard(shard) });
  registry.rejectionAnswer = rejectionAnswer;
  return { ownership, cluster, single, registry };
}

/**
 * The payments' repositories: reads by id sent to the id's region database (here, or at a node
 * of that region), writes to the home one, tenants and keys to the control database.
 */
function repositoriesOf(dbs: RegionDatabases<RegionStore>, ownership: Ownership, cluster: ClusterParts | undefined, pools: { control: Pool; homePool: Pool }) {
  const regions = new RegionReads({ home: dbs.home, shared: dbs.shared, repos: (r) => dbs.of(r).repos, ownership, peers: cluster?.forwarder });
  const repos = makeRepositories({ region: dbs.home, repos: dbs.of(dbs.home).repos }, {
    ...pools, read: regions.read, writable: (r) => (regions.readsHere(r) ? dbs.of(r).repos : undefined),
    regions: dbs.shared ? [] : dbs.regions(),
  });
  return { regions, repos };
}

/**
 * How long the endpoints matching a tenant's event type are reused by the feed: an endpoint
 * made on another node hears the events committed from at most this long after it.
 */
const ENDPOINT_MATCH_CACHE_MS = 1_000;

/** Past this many live endpoints the feed reads every event whole: a longer filter would cost its query more than it saves. */
const MAX_INTEREST_ENDPOINTS = 1_000;

/**
 * Webhook endpoints, deliveries and attempts live in the control database (one queue for every
 * region); every node runs a dispatcher over it, each delivery leased to one at a time.
 */
function webhookParts(cfg: Config, control: Pool, logger: Logger, metrics: Metrics) {
  const store = webhookRepositories(control);
  const settings: WebhookSettings = {
    ...DEFAULT_WEBHOOK_SETTINGS, allowPrivate: cfg.webhookAllowPrivate === 'true', timeoutMs: cfg.webhookTimeoutMs,
    retry: { ...DEFAULT_WEBHOOK_SETTINGS.retry, baseDelayMs: cfg.webhookRetryBaseMs, horizonMs: cfg.webhookRetryHorizonMs }, secretOverlapMs: cfg.webhookSecretOverlapMs,
    pollMs: cfg.webhookPollMs, leaseMs: Math.max(DEFAULT_WEBHOOK_SETTINGS.leaseMs, 2 * cfg.webhookTimeoutMs),
  };
  const dispatcher = new WebhookDispatcher({
    store, settings, resolve: systemResolver, clock: () => new Date(), random: Math.random, logger: logger.child({ part: 'webhooks' }),
    onAttempt: (a) => {
      metrics.webhookAttempts.inc({ outcome: a.outcome === 'delivered' ? 'delivered' : 'failed' });
      if (a.outcome === 'delivered') metrics.webhookDelivery.observe(Math.max(0, a.endedAt.getTime() - a.createdAt.getTime()) / 1000);
    },
  });
  const keyed: WebhookKeyedWrites = {
    createOnce: (k, e, stored) => createWebhookEndpointOnce(control, k, e, stored),
    rotateOnce: (k, r, stored) => rotateWebhookSecretOnce(control, k, r, stored),
  };
  // The endpoints each tenant's events match, reused by the feed for ENDPOINT_MATCH_CACHE_MS;
  // forgotten at once when this node makes or deletes one.
  const matching = new TtlCache<Awaited<ReturnType<WebhookStore['endpoints']['matching']>>>(ENDPOINT_MATCH_CACHE_MS, 10_000);
  // What every tenant's endpoints take, for the feed to pass over the other events unread:
  // as fresh as the matches above, forgotten with them.
  const interest = new TtlCache<EventInterest | undefined>(ENDPOINT_MATCH_CACHE_MS, 1);
  const cached: WebhookStore = {
    ...store,
    endpoints: {
      ...store.endpoints,
      matching: (tenantId, type) => matching.get(`${tenantId}\u0000${type}`, Date.now(), () => store.endpoints.matching(tenantId, type)),
      interest: (max) => interest.get(String(max), Date.now(), () => store.endpoints.interest(max)),
    },
  };
  const changed = () => { matching.clear(); interest.clear(); };
  return { store, cached, keyed, dispatcher, nudge: () => dispatcher.nudge(), changed };
}


/**
 * The outbox's consumers on this node's shards: webhook deliveries, and with NATS_URLS the bus
 * (src/payments/event-feed.ts, event-bus.ts). Each commit wakes them; they space their passes.
 * They start the node's bus connection, and close it last.
 */
function eventFeeds(webhooks: ReturnType<typeof webhookParts>, on: { sources: () => EventSource[]; registry: AccountRegistry; keeper: BusKeeper | undefined }, cfg: Config, logger: Logger) {
  const { keeper } = on;
  const feed = (consumer: string, handle: (e: StoredEvent) => Promise<void>, more: Pick<OutboxFeedDeps, 'afterPage' | 'interest'> = {}) => new OutboxFeed({
    consumer, sources: on.sources, handle, ...more, intervalMs: cfg.webhookPollMs, logger: logger.child({ part: `feed-${consumer}` }),
  });
  // The dispatcher is nudged after a page that made a delivery, not after every page: a page of
  // events no endpoint wants would cost a claim query for nothing (it polls for retries anyway).
  let enqueued = false;
  const feeds = [
    feed('webhooks', async (e) => {
      if (e.tenantId === null) return;
      const made = await enqueueEvent(webhooks.cached, webhookEventOf({ ...e, tenantId: e.tenantId }), { now: new Date() });
      if (made.some((d) => d.created)) enqueued = true;
    }, {
      afterPage: () => {
        if (enqueued) webhooks.nudge();
        enqueued = false;
      },
      // Only events some endpoint takes are read whole: with no endpoint, none is.
      interest: () => webhooks.cached.endpoints.interest(MAX_INTEREST_ENDPOINTS),
    }),
    ...(keeper ? [feed('bus', (e) => publishEvent(keeper, e))] : []),
  ];
  on.registry.onCommitted(() => { for (const f of feeds) f.wake(); });
  return {
    start: () => { keeper?.start(); for (const f of feeds) f.start(); },
    stop: async () => { await Promise.all(feeds.map((f) => f.stop())); await keeper?.stop(); },
  };
}

/** What a node keeps per region database: its pool, its group-commit writer and its repositories. */
export interface RegionStore { pool: Pool; writer: GroupWriter; repos: RegionRepositories }

/**
 * The region databases: the home one (DATABASE_URL, or the embedded PGlite) and, named by
 * REGION_DATABASE_URLS, the others, opened when this node first takes a shard of theirs.
 */
function regionDatabases(cfg: Config, home: { pool: Pool; url: string }, embedded: boolean, onCommit: CommitObserver | undefined, metrics: Metrics, logger: Logger): RegionDatabases<RegionStore> {
  const urls = new Map([...parseRegionDatabaseUrls(cfg.regionDatabaseUrls)].map(([r, u]) => [r as Region, u]));
  const sizes = poolSizes(cfg, embedded);
  return new RegionDatabases<RegionStore>(
    { home: { region: cfg.region as Region, ...home }, urls, poolMax: sizes.main, writerPoolMax: sizes.writer, statementTimeoutMs: cfg.pgStatementTimeoutMs, shardBuckets: cfg.shardBuckets, logger },
    ({ main, writer }) => ({ pool: main, writer: new GroupWriter(writer, { lanes: sizes.lanes, maxSets: cfg.writerMaxSets }, onCommit, metrics), repos: regionRepositories(main) }),
  );
}

/**
 * PG_POOL_MAX connections per region database, split: one per writer lane in the writer's own
 * pool (generic plans, db.ts), the rest for every other query. PGlite is one session shared by
 * every connection: one connection, never more, and the writer shares it (writer 0).
 */
export function poolSizes(cfg: Pick<Config, 'pgPoolMax' | 'writerLanes'>, embedded: boolean): { main: number; writer: number; lanes: number } {
  if (embedded || cfg.pgPoolMax < 2) return { main: embedded ? 1 : cfg.pgPoolMax, writer: 0, lanes: 1 };
  const lanes = Math.min(cfg.writerLanes, cfg.pgPoolMax - 1);
  return { main: cfg.pgPoolMax - lanes, writer: lanes, lanes };
}

/** The relay's work: each region database this node writes, with the shards of it this node owns now. */
function workSources(ownership: Ownership, dbs: RegionDatabases<RegionStore>): { repos: RegionRepositories; shards: string[] }[] {
  const byRegion = new Map<Region, string[]>();
  for (const shard of ownership.shardIds()) {
    if (!ownership.isLocal(shard)) continue;
    const region = dbs.shared ? dbs.home : shardParts(shard).region;
    byRegion.set(region, [...(byRegion.get(region) ?? []), shard]);
  }
  return [...byRegion].map(([region, shards]) => ({ repos: dbs.of(region).repos, shards }));
}
