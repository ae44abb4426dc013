// The payments layer, assembled: every workflow over the ports the composition root gives it.
// HTTP routes call these and nothing below them.
import type { Logger } from 'pino';
import type { Config } from '../../config/settings.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import type { Ownership } from '../cluster/ownership.ts';
import type { Repositories } from '../persistence/repositories.ts';
import { Accounts } from './accounts.ts';
import { Batches } from './batch.ts';
import { Directory } from './directory.ts';
import { LedgerEvents } from './events.ts';
import type { EventStreamSettings } from './events.ts';
import { ForwardedRequests } from './forwarded.ts';
import type { Forwarder } from '../cluster/forward.ts';
import type { RegionReads } from './region-reads.ts';
import { WebhookEndpoints } from './webhooks.ts';
import type { WebhookKeyedWrites } from './webhooks.ts';
import type { WebhookStore } from '../persistence/webhooks.ts';
import { Holds } from './holds.ts';
import { InFlightKeys } from './in-flight-keys.ts';
import { Inspection } from './inspection.ts';
import { Ops } from './ops.ts';
import type { OpsPeers } from './ops.ts';
import { Saga } from './saga.ts';
import type { SagaLegs } from './saga.ts';
import { Suspense } from './suspense.ts';
import { Tenants } from './tenants.ts';
import { Transfers } from './transfers.ts';
import { TtlCache } from './ttl-cache.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { WindowDelta } from '../observability/window.ts';

/** How long the in-flight figures are reused: a scrape every few seconds asks the database at most this often. */
const IN_FLIGHT_CACHE_MS = 3_000;

export interface Payments {
  accounts: Accounts;
  transfers: Transfers;
  holds: Holds;
  batches: Batches;
  /** Money returned to closed accounts: the admin's list and payouts. */
  suspense: Suspense;
  tenants: Tenants;
  inspection: Inspection;
  /** The ops page's figures: this node's summary, and the page gathered from every node. */
  ops: Ops;
  forwarded: ForwardedRequests;
  /** The ledger events: a tenant's feed, an account's events, a live follow (SSE). */
  events: LedgerEvents;
  /** The tenant's webhook endpoints, their secrets and deliveries. */
  webhooks: WebhookEndpoints;
  saga: Saga;
  /** The home database answers (readiness; the control database is not asked: payments go on without it). */
  ping: () => Promise<void>;
  /** Transfers in flight and the oldest one's age in seconds, cached a few seconds (metrics, the ops page). */
  inFlight: () => Promise<{ count: number; oldestAgeS: number }>;
  /** Webhook deliveries pending, cached like inFlight. */
  webhookBacklog: () => Promise<number>;
}

/** What the ops page reads beyond the payments' own parts: this node's sampled counters, and the way to its peers. */
export interface OpsSources { window: () => WindowDelta | undefined; peers: OpsPeers | undefined }

/** What the webhook endpoints work with beyond the payments' own parts: their tables (the control database) and the dispatcher's wake-up. */
export interface WebhookSources { store: WebhookStore; keyed: WebhookKeyedWrites; nudge: () => void; changed: () => void }

export function buildPayments(deps: {
  config: Config; registry: AccountRegistry; ownership: Ownership; repos: Repositories; regions: RegionReads; logger: Logger; clock: () => number;
  metrics: Metrics; ops: OpsSources; webhooks: WebhookSources;
  /** The event stream's settings; the defaults where absent (src/payments/events.ts). */
  events?: Partial<EventStreamSettings> | undefined;
  /** The legs on the bus, when they travel by it (src/payments/legs.ts). */
  legs?: SagaLegs | undefined;
  /** In a cluster: a debit it forwards for a waiting request comes back with the outcome (src/cluster/forward.ts). */
  forwarder?: Pick<Forwarder, 'tellOutcomesTo'> | undefined;
}): Payments {
  const { config, registry, repos, logger, clock, metrics } = deps;
  const saga = new Saga(registry, repos.transfers, logger, deps.legs);
  registry.onCommitted((ws) => saga.afterCommit(ws));
  deps.forwarder?.tellOutcomesTo(saga);
  const keys = new InFlightKeys(config.askTimeoutMs + config.transferWaitMs);
  const directory = new Directory(repos.accounts);
  const ctx = { config, registry, saga, repos, directory, keys, clock, metrics };
  const inFlight = new TtlCache<{ count: number; oldestAgeS: number }>(IN_FLIGHT_CACHE_MS, 1);
  const transfers = new Transfers(ctx);
  const inspection = new Inspection(registry, deps.ownership, repos, directory);
  const inFlightNow = () => inFlight.get('all', Date.now(), repos.transfers.inFlightSummary);
  const backlog = new TtlCache<number>(IN_FLIGHT_CACHE_MS, 1);
  const webhookBacklog = () => backlog.get('all', Date.now(), deps.webhooks.store.deliveries.pending);
  return {
    accounts: new Accounts(ctx),
    transfers,
    holds: new Holds(ctx, transfers),
    batches: new Batches(ctx, transfers),
    suspense: new Suspense(ctx, transfers),
    tenants: new Tenants(repos, keys, logger, { cacheMs: config.controlCacheMs, outageGraceMs: config.controlOutageGraceMs }, Date.now, metrics),
    inspection,
    ops: new Ops({ ownership: deps.ownership, registry, inspection, inFlight: inFlightNow, webhookBacklog, leaseTtlMs: config.leaseTtlMs, ...deps.ops }),
    forwarded: new ForwardedRequests(registry, deps.regions, saga, config.askTimeoutMs),
    events: new LedgerEvents({ repos, directory, registry, settings: { heartbeatMs: config.eventsHeartbeatMs, pollMs: config.eventsPollMs, ...deps.events } }),
    webhooks: new WebhookEndpoints({
      ...deps.webhooks, keys, allowPrivate: config.webhookAllowPrivate === 'true', secretOverlapMs: config.webhookSecretOverlapMs, clock: Date.now,
    }),
    saga,
    ping: repos.health.ping,
    inFlight: inFlightNow,
    webhookBacklog,
  };
}

export type { Outcome } from './outcome.ts';
export { transferAnswerStatus } from './outcome.ts';
export { requestHash } from './request-hash.ts';
export type { Principal, TenantLimits } from '../persistence/repositories.ts';
