// Every setting of a node: its environment variable, unit, default and why. Read once at
// start by loadConfig, validated, frozen and passed down; nothing else reads process.env.

interface Setting<T> {
  env: string;
  default: T;
  doc: string;
  parse: (raw: string) => T | undefined;
}

const int = (min: number, max: number) => (raw: string): number | undefined => {
  if (!/^-?[0-9]+$/.test(raw)) return undefined;
  const v = Number(raw);
  return v >= min && v <= max ? v : undefined;
};
const str = (re: RegExp) => (raw: string): string | undefined => (re.test(raw) ? raw : undefined);
const optional = (raw: string): string | undefined => raw;
const redisUrls = (raw: string): string | undefined =>
  raw.split(',').every((u) => URL.canParse(u.trim()) && /^rediss?:$/.test(new URL(u.trim()).protocol)) ? raw : undefined;

/** REGION_DATABASE_URLS (`eu=postgres://...,us=postgres://...`) as a map; throws on a malformed entry. */
export function parseRegionDatabaseUrls(raw: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of raw.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    const region = part.slice(0, eq);
    const url = part.slice(eq + 1).trim();
    if (eq <= 0 || !/^[a-z][a-z0-9-]{0,15}$/.test(region) || !URL.canParse(url) || !/^postgres(ql)?:$/.test(new URL(url).protocol)) throw new Error(`not region=postgres-url: ${part}`);
    if (out.has(region)) throw new Error(`region ${region} named twice`);
    out.set(region, url);
  }
  return out;
}

const natsUrls = (raw: string): string | undefined =>
  raw.split(',').map((u) => u.trim()).filter(Boolean).every((u) => URL.canParse(u) && /^(nats|tls):$/.test(new URL(u).protocol)) ? raw : undefined;

const regionUrls = (raw: string): string | undefined => {
  try {
    parseRegionDatabaseUrls(raw);
    return raw;
  } catch {
    return undefined;
  }
};

export const SETTINGS = {
  port: { env: 'PORT', default: 3000, parse: int(0, 65535), doc: 'HTTP port; 0 picks a free one.' },
  host: { env: 'HOST', default: '127.0.0.1', parse: str(/^[0-9a-zA-Z.:-]+$/), doc: 'Interface to listen on.' },
  databaseUrl: { env: 'DATABASE_URL', default: '', parse: optional, doc: 'PostgreSQL URL. Empty: embedded PGlite under DATA_DIR.' },
  regionDatabaseUrls: { env: 'REGION_DATABASE_URLS', default: '', parse: regionUrls, doc: 'Every region\'s PostgreSQL, as region=url pairs, comma-separated (eu=postgres://...,us=postgres://...). Used only to write another region\'s data, which is region failover; reads of another region go to a node of that region. Empty: DATABASE_URL holds every region\'s data (one database for the cluster).' },
  controlDatabaseUrl: { env: 'CONTROL_DATABASE_URL', default: '', parse: optional, doc: 'PostgreSQL URL of the control database: tenants, API keys and their rate limits, shared by every region. Empty: the node\'s own DATABASE_URL (or, embedded, the same PGlite). Migrations run on it too; its pool is small (2 connections).' },
  natsUrls: { env: 'NATS_URLS', default: '', parse: natsUrls, doc: 'NATS servers with JetStream (nats://host:port, comma-separated): the ledger events are published to the stream GEOPAY_EVENTS, subjects geopay.events.<tenant>.<account>. Empty: no bus; events, webhooks and live streams run in-process from the PostgreSQL outbox.' },
  legsTransport: { env: 'LEGS_TRANSPORT', default: 'bus', parse: str(/^(bus|http)$/), doc: 'bus: with NATS_URLS on a cluster, cross-region credit legs and their outcomes travel through the JetStream streams GEOPAY_LEGS_<REGION>, and a request waiting for another node\'s commit hears it on the bus. http: legs are forwarded to the owner node by HTTP, whose answer carries the outcome (the comparison baseline; also what runs without NATS_URLS).' },
  legsScope: { env: 'LEGS_SCOPE', default: 'cross-region', parse: str(/^(cross-region|all)$/), doc: 'With LEGS_TRANSPORT=bus: cross-region puts only legs between regions on the bus, a leg within a region goes straight to its owner; all puts every leg whose destination is owned by another node on the bus. docs/bus.md has the measurement behind the default.' },
  natsReplicas: { env: 'NATS_REPLICAS', default: 1, parse: int(1, 5), doc: 'Replicas of the JetStream streams geopay creates: 1 on one server, 3 on a cluster of three or more (a majority survives the loss of one).' },
  eventsHeartbeatMs: { env: 'EVENTS_HEARTBEAT_MS', default: 15_000, parse: int(100, 300_000), doc: 'An account\'s event stream (SSE) sends a heartbeat comment after this long without an event, so proxies keep it open and clients notice a dead connection.' },
  eventsPollMs: { env: 'EVENTS_POLL_MS', default: 1_000, parse: int(10, 60_000), doc: 'How often an event stream looks for events besides being woken by this node\'s own commits (events committed by another node: an account of another region, or after a hand-over).' },
  webhookAllowPrivate: { env: 'WEBHOOK_ALLOW_PRIVATE', default: 'false', parse: str(/^(true|false)$/), doc: 'true: webhooks may go to loopback, private, link-local and other non-public addresses, and over plain http (tests and development only). Default: https to public addresses only, checked at every attempt after DNS, the connection pinned to the checked address.' },
  webhookTimeoutMs: { env: 'WEBHOOK_TIMEOUT_MS', default: 15_000, parse: int(100, 60_000), doc: 'Bound on one webhook attempt, DNS to the last byte.' },
  webhookRetryBaseMs: { env: 'WEBHOOK_RETRY_BASE_MS', default: 5_000, parse: int(1, 3_600_000), doc: 'The first webhook retry waits up to this long (full jitter); each further one up to twice the last, capped at 12 h.' },
  webhookRetryHorizonMs: { env: 'WEBHOOK_RETRY_HORIZON_MS', default: 259_200_000, parse: int(1_000, 2_592_000_000), doc: 'How long a webhook delivery is retried (exponential backoff with full jitter, 5 s base, 12 h cap) before it is given up as failed: 3 days.' },
  webhookSecretOverlapMs: { env: 'WEBHOOK_SECRET_OVERLAP_MS', default: 86_400_000, parse: int(0, 2_592_000_000), doc: 'How long a rotated-out webhook secret still signs deliveries (beside the new one), so receivers can switch without a gap.' },
  webhookPollMs: { env: 'WEBHOOK_POLL_MS', default: 1_000, parse: int(10, 60_000), doc: 'The webhook dispatcher\'s wait when no delivery was due.' },
  controlCacheMs: { env: 'CONTROL_CACHE_MS', default: 5_000, parse: int(0, 600_000), doc: 'Staleness bound of what a node read from the control database: a key\'s principal and a tenant\'s rate limits are trusted this long before they are read again. A key revoked or a limit changed on another node takes effect here within it (on the node that made the change, at once).' },
  controlOutageGraceMs: { env: 'CONTROL_OUTAGE_GRACE_MS', default: 900_000, parse: int(0, 86_400_000), doc: 'While the control database cannot be read, a key or limits read before keep being used for at most this long past CONTROL_CACHE_MS (stale-if-error), so payments with known keys go on through an outage; a key revoked during the outage works until then (docs/tradeoffs.md). A key this node never read answers 503 control_plane_unavailable. 0: no grace, every key stops at its staleness bound.' },
  dataDir: { env: 'DATA_DIR', default: './data', parse: optional, doc: 'Where the embedded database keeps its files.' },
  pgPoolMax: { env: 'PG_POOL_MAX', default: 16, parse: int(1, 90), doc: 'Connections to each region database, WRITER_LANES of them the writer\'s own (max_connections is shared; embedded always uses 1).' },
  pgStatementTimeoutMs: { env: 'PG_STATEMENT_TIMEOUT_MS', default: 10_000, parse: int(100, 600_000), doc: 'Bound on any one SQL statement.' },
  nodeId: { env: 'NODE_ID', default: 'node-1', parse: str(/^[a-zA-Z0-9_.-]{1,64}$/), doc: 'Name of this node, recorded on every posting.' },
  region: { env: 'REGION', default: 'local', parse: str(/^[a-z][a-z0-9-]{0,15}$/), doc: 'Home region of this node and of accounts opened through it.' },
  shardBuckets: { env: 'SHARD_BUCKETS', default: 64, parse: int(1, 4096), doc: 'Hash buckets per region; a shard is (region, bucket). Pinned in the database by its first start: a node configured with another count refuses to start (exit code 2).' },
  adminApiKey: { env: 'ADMIN_API_KEY', default: '', parse: str(/^$|^[A-Za-z0-9_-]{24,128}$/), doc: 'Admin key to install on first start; empty: one is generated and printed once.' },
  engine: { env: 'ENGINE', default: 'geopay', parse: str(/^(geopay|baseline)$/), doc: 'What serves accounts and money movement: geopay (actors), or baseline, the row-locking design (one PostgreSQL transaction per request) kept as the comparison point of the benchmarks. Tenants and keys are the same for both.' },
  logLevel: { env: 'LOG_LEVEL', default: 'info', parse: str(/^(fatal|error|warn|info|debug|trace|silent)$/), doc: 'pino log level.' },
  snapshotEvery: { env: 'SNAPSHOT_EVERY', default: 1000, parse: int(1, 1_000_000), doc: 'Postings between snapshots of an account; bounds recovery time.' },
  actorIdleMs: { env: 'ACTOR_IDLE_MS', default: 60_000, parse: int(10, 86_400_000), doc: 'An actor idle this long is snapshotted and passivated.' },
  maxResidentActors: { env: 'MAX_RESIDENT_ACTORS', default: 200_000, parse: int(10, 10_000_000), doc: 'Above this, the least recently used idle actors are passivated early.' },
  mailboxLimit: { env: 'MAILBOX_LIMIT', default: 5_000, parse: int(1, 1_000_000), doc: 'Commands queued per account before it answers mailbox_full (503).' },
  maxBatch: { env: 'MAX_BATCH', default: 500, parse: int(1, 10_000), doc: 'Commands of one account committed in one transaction at most.' },
  writerLanes: { env: 'WRITER_LANES', default: 2, parse: int(1, 64), doc: 'Commit statements in flight at once; more queue and are merged (node-level group commit). Few lanes, big statements: on the 2-core bench machine 1-2 lanes carried 1.7x what 8 did.' },
  writerMaxSets: { env: 'WRITER_MAX_SETS', default: 256, parse: int(1, 10_000), doc: 'Actor write sets merged into one commit statement at most.' },
  holdDefaultTtlMs: { env: 'HOLD_DEFAULT_TTL_MS', default: 604_800_000, parse: int(1_000, 31_536_000_000), doc: 'Deadline of a hold that names none (7 days).' },
  holdMaxTtlMs: { env: 'HOLD_MAX_TTL_MS', default: 2_592_000_000, parse: int(1_000, 31_536_000_000), doc: 'Latest deadline a hold may ask for (30 days).' },
  batchMaxItems: { env: 'BATCH_MAX_ITEMS', default: 1_000, parse: int(1, 10_000), doc: 'Items in one POST /v1/transfers/batch at most.' },
  linkedHoldTtlMs: { env: 'LINKED_HOLD_TTL_MS', default: 60_000, parse: int(1_000, 3_600_000), doc: 'Deadline of the holds behind a linked batch group; an undecided group is aborted after it.' },
  clusterSecret: { env: 'CLUSTER_SECRET', default: '', parse: str(/^$|^[\x21-\x7E]{16,256}$/), doc: 'Shared by the nodes of a cluster: the HMAC key that signs forwarded requests (it never travels itself); empty: no node-to-node listener.' },
  internalHost: { env: 'INTERNAL_HOST', default: '127.0.0.1', parse: str(/^[0-9a-zA-Z.:-]+$/), doc: 'Interface of the node-to-node listener (/internal), apart from the public one; loopback by default: on several hosts, a private interface that clients cannot reach.' },
  internalPort: { env: 'INTERNAL_PORT', default: 0, parse: int(0, 65535), doc: 'Port of the node-to-node listener; 0 picks a free one (peers learn it from membership, so nothing needs to be fixed).' },
  advertisedInternalUrl: { env: 'ADVERTISED_INTERNAL_URL', default: '', parse: (raw: string) => (URL.canParse(raw) && /^https?:$/.test(new URL(raw).protocol) ? raw : undefined), doc: 'http(s) URL of the node-to-node listener that this node advertises to its peers through membership. Empty: derived from INTERNAL_HOST and the bound port.' },
  clusterSignatureWindowMs: { env: 'CLUSTER_SIGNATURE_WINDOW_MS', default: 30_000, parse: int(1_000, 600_000), doc: 'A signed forwarded request whose timestamp is further than this from the owner\'s clock, either way, is refused (401); its nonce is remembered as long. Bounds clock skew between nodes and how long a replay must be guarded against.' },
  clusterNonceLimit: { env: 'CLUSTER_NONCE_LIMIT', default: 250_000, parse: int(1_000, 10_000_000), doc: 'Nonces of forwarded requests remembered at most (about 120 bytes each): about 8,000 forwarded requests per second with the 30 s window. Past it a forwarded request answers 503 shard_unavailable (retryable) until old nonces expire: replay protection never gives way to load.' },
  forwardTimeoutMs: { env: 'FORWARD_TIMEOUT_MS', default: 10_000, parse: int(100, 600_000), doc: 'Bound on a request forwarded to the owner of a shard.' },
  regions: { env: 'REGIONS', default: '', parse: str(/^$|^[a-z][a-z0-9-]{0,15}(,[a-z][a-z0-9-]{0,15})*$/), doc: 'Every region of the cluster, comma-separated; empty: this node\'s REGION alone.' },
  regionFailover: { env: 'REGION_FAILOVER', default: 'deny', parse: str(/^(allow|deny)$/), doc: 'allow: nodes of other regions take the shards of a region with no live node for REGION_FAILOVER_GRACE_MS (availability, at the cost of cross-region latency); deny: those accounts wait for their region.' },
  regionFailoverGraceMs: { env: 'REGION_FAILOVER_GRACE_MS', default: 30_000, parse: int(0, 3_600_000), doc: 'How long a region must have no live node before others may take its shards.' },
  faultCommitDelayMs: { env: 'FAULT_COMMIT_DELAY_MS', default: 0, parse: int(0, 60_000), doc: 'Fault injection for tests only: wait this long between deciding a batch (its epoch taken) and sending its commit, to open the window a paused process would. Always 0 in production.' },
  faultClockOffsetMs: { env: 'FAULT_CLOCK_OFFSET_MS', default: 0, parse: int(-86_400_000, 86_400_000), doc: 'Fault injection for tests only: this node\'s business clock (ids, timestamps, the hold deadlines it stamps) runs this far ahead of the machine\'s (negative: behind), like a host whose clock is off. Hold expiry and the relay decide on the database\'s clock, so it must change no outcome there. Always 0 in production.' },
  askTimeoutMs: { env: 'ASK_TIMEOUT_MS', default: 10_000, parse: int(100, 600_000), doc: 'How long a request waits for its actor before request_timeout.' },
  transferWaitMs: { env: 'TRANSFER_WAIT_MS', default: 2_000, parse: int(0, 60_000), doc: 'How long POST /v1/transfers waits for the credit before answering 202.' },
  relayIntervalMs: { env: 'RELAY_INTERVAL_MS', default: 1_000, parse: int(10, 600_000), doc: 'How often the relay looks for transfers left debited or refused.' },
  relayMinAgeMs: { env: 'RELAY_MIN_AGE_MS', default: 2_000, parse: int(0, 600_000), doc: 'A transfer this old and still in flight is re-delivered (the first delivery is direct).' },
  relayMaxBackoffMs: { env: 'RELAY_MAX_BACKOFF_MS', default: 60_000, parse: int(100, 3_600_000), doc: 'Longest wait before the relay or the hold sweeper tries again a transfer or hold it could not move; the wait is max(RELAY_MIN_AGE_MS, RELAY_INTERVAL_MS) for the first 10 attempts (a failover takes about a lease TTL), then doubles per attempt. Rows that cannot move (a region down) go behind the others, and come back this often at least once they can.' },
  idempotencyRetentionMs: { env: 'IDEMPOTENCY_RETENTION_MS', default: 86_400_000, parse: int(1_000, 2_592_000_000), doc: 'How long an Idempotency-Key is remembered, and longer while its transfer is in flight. A retry after that still finds its transfer or hold (their ids are derived from the request) and never makes a second.' },
  idempotencyCleanupMs: { env: 'IDEMPOTENCY_CLEANUP_MS', default: 600_000, parse: int(100, 86_400_000), doc: 'How often expired keys are deleted.' },
  bodyLimitBytes: { env: 'BODY_LIMIT_BYTES', default: 65_536, parse: int(1_024, 10_485_760), doc: 'Largest request body accepted.' },
  requestTimeoutMs: { env: 'REQUEST_TIMEOUT_MS', default: 30_000, parse: int(1_000, 600_000), doc: 'Whole-request bound enforced by the HTTP server.' },
  shutdownTimeoutMs: { env: 'SHUTDOWN_TIMEOUT_MS', default: 15_000, parse: int(100, 600_000), doc: 'Bound on draining at SIGTERM before the process exits anyway.' },
  rateLimitReadsPerS: { env: 'RATE_LIMIT_READS_PER_S', default: 100, parse: int(1, 1_000_000), doc: 'GET requests per second per tenant (the admin key counts as one tenant) unless the tenant has an override; past it, 429 rate_limited. Counted across nodes with REDIS_URLS, per node without.' },
  rateLimitWritesPerS: { env: 'RATE_LIMIT_WRITES_PER_S', default: 100, parse: int(1, 1_000_000), doc: 'POST/PUT/DELETE requests per second per tenant, a budget separate from reads so a write burst never blocks reading balances.' },
  redisUrls: { env: 'REDIS_URLS', default: '', parse: redisUrls, doc: 'Comma-separated redis:// (or rediss://) URLs; the rate limiter uses the first. Empty: rate limits are counted in memory, per node.' },
  redisKeyPrefix: { env: 'REDIS_KEY_PREFIX', default: 'geopay:', parse: str(/^[A-Za-z0-9:_.-]{0,64}$/), doc: 'Prefix of every Redis key, so deployments (or test runs) can share one Redis.' },
  redisCommandTimeoutMs: { env: 'REDIS_COMMAND_TIMEOUT_MS', default: 200, parse: int(10, 10_000), doc: 'Bound on one Redis command. Past it (or with Redis down) the rate limiter lets the request through: limits fail open, payments do not stop.' },
  leaseTtlMs: { env: 'LEASE_TTL_MS', default: 10_000, parse: int(300, 600_000), doc: 'TTL of a shard lease on the Redis masters (REDIS_URLS), extended every third of it. Also the longest a dead node\'s shards stay unowned; shorter means faster failover and more Redis traffic.' },
  heartbeatMs: { env: 'HEARTBEAT_MS', default: 1_000, parse: int(50, 60_000), doc: 'How often a node writes its membership heartbeat to the Redis masters.' },
  epochCheckMs: { env: 'EPOCH_CHECK_MS', default: 1_000, parse: int(50, 600_000), doc: 'Single node only: how often it re-reads the shard epochs in PostgreSQL, and the staleness bound of its reads. A balance read from actor memory is answered only after a check that started at most this long ago; a newer epoch (another process took over, as in a deploy overlap) makes the shard answer 503 shard_unavailable. Shorter: fresher reads after a takeover, one small query more often. Cluster mode bounds reads by the lease instead.' },
  advertisedUrl: { env: 'ADVERTISED_URL', default: '', parse: (raw: string) => (URL.canParse(raw) && /^https?:$/.test(new URL(raw).protocol) ? raw : undefined), doc: 'Public http(s) URL of this node, named as the server in its OpenAPI document. (Peers forward to ADVERTISED_INTERNAL_URL.)' },
} satisfies Record<string, Setting<number> | Setting<string>>;

type Settings = typeof SETTINGS;
export type Config = { readonly [K in keyof Settings]: Settings[K]['default'] };

export class ConfigError extends Error {}

/** Reads the settings from an environment once; throws ConfigError naming every bad one. */
export function loadConfig(env: Record<string, string | undefined>, overrides: Partial<Config> = {}): Config {
  const out: Record<string, unknown> = {};
  const bad: string[] = [];
  for (const [key, s] of Object.entries(SETTINGS) as [string, Setting<unknown>][]) {
    const raw = env[s.env];
    if (raw === undefined || raw === '') {
      out[key] = s.default;
      continue;
    }
    const v = s.parse(raw);
    // Keys and URLs (which may carry a password) are never echoed.
    if (v === undefined) bad.push(`${s.env}=${s.env === 'ADMIN_API_KEY' || s.env === 'REDIS_URLS' || s.env === 'CLUSTER_SECRET' ? '<redacted>' : raw}`);
    else out[key] = v;
  }
  if (bad.length > 0) throw new ConfigError(`invalid settings: ${bad.join(', ')}`);
  return Object.freeze({ ...(out as Config), ...overrides });
}
