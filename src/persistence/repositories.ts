// The repositories the payments layer works through: every query it needs, named, bound to
// the node's pools at the composition root: tenants, API keys, limits and linked-group
// decisions to the control database's; a read by id to the database of the id's region;
// the rest to the home region's. Payments code holds no SQL and no pool.
import { GeopayError } from '../domain/errors.ts';
import type { Pool } from './db.ts';
import * as q from './queries.ts';
import { getTenantLimits, setTenantLimits } from './limits.ts';
import type { TenantLimits } from './limits.ts';
import { listSuspense } from './suspense.ts';
import * as ev from './events.ts';
import { AnswerWriter } from './answers.ts';
import type { AccountId, HoldId, Region, TransferId } from '../domain/ids.ts';
import { parseAccountId, parseHoldId, parseShardId, parseTransferId, regionOf, regionOfHold, regionOfTransfer, shardParts } from '../domain/ids.ts';
import type { AnswerRow } from './answers.ts';

/**
 * One region database's repositories: its accounts, journal, transfers (the outbox), holds,
 * idempotency keys, suspense and shard rows. A node has one per region database it uses.
 */
export function regionRepositories(pool: Pool) {
  const answers = new AnswerWriter(pool);
  return {
    accounts: {
      find: (id: string) => q.findAccount(pool, id),
      statement: (id: string, limit: number, beforeSeq: number | undefined) => q.statement(pool, id, limit, beforeSeq),
      journalPosition: (id: string) => q.journalPosition(pool, id),
    },
    transfers: {
      get: (id: string) => q.getTransfer(pool, id),
      captureOfHold: (holdId: string) => q.captureOfHold(pool, holdId),
      source: (id: string) => q.transferSource(pool, id),
      claimInFlight: (minAgeMs: number, c: q.WorkClaim) => q.claimInFlightTransfers(pool, minAgeMs, c),
      inFlightSummary: () => q.inFlightSummary(pool),
    },
    holds: {
      get: (id: string) => q.getHold(pool, id),
      claimDue: (asOfIso: string | null, c: q.WorkClaim) => q.claimDueHolds(pool, asOfIso, c),
    },
    keys: {
      claimBatch: (tenantId: string, key: string, requestHash: string) => q.claimBatchKey(pool, tenantId, key, requestHash),
      deleteExpired: (retentionMs: number) => q.deleteExpiredKeys(pool, retentionMs),
      /** A transfer's first answer, stored in the next batched statement (src/persistence/answers.ts). */
      storeAnswer: (row: AnswerRow) => answers.store(row),
      /** Resolves once every answer handed over is written (before the pool closes). */
      answersStored: () => answers.idle(),
    },
    suspense: {
      list: (limit: number) => listSuspense(pool, limit),
    },
    /** The ledger events (migration 013): reads by account and tenant, and a publisher's side (per shard, with its cursor). */
    events: {
      ofAccount: (accountId: string, afterN: number, limit: number) => ev.accountEvents(pool, accountId, afterN, limit),
      ofTenant: (tenantId: string, after: ev.EventPosition | null, limit: number) => ev.tenantEvents(pool, tenantId, after, limit),
      unpublished: (consumer: string, shards: readonly string[], limitPerShard: number, interest?: ev.EventInterest) =>
        ev.unpublishedEvents(pool, consumer, shards, limitPerShard, interest),
      markPublished: (consumer: string, marks: readonly ev.PublishedMark[]) => ev.markPublished(pool, consumer, marks),
    },
    shards: {
      list: () => q.listShards(pool),
      get: (id: string) => q.getShard(pool, id),
    },
    health: {
      ping: () => q.ping(pool),
    },
  };
}

export type RegionRepositories = ReturnType<typeof regionRepositories>;

/**
 * The reads of one row or one account that any node may be asked for, by the id's region:
 * run on that region's database where this node reads it, else asked of a node of that
 * region (src/payments/region-reads.ts). Data in, JSON-safe data out (bigint travels).
 */
export const REGION_READS = {
  account: (r: RegionRepositories, id: string) => r.accounts.find(id),
  statement: (r: RegionRepositories, id: string, limit: number, beforeSeq: number | null) => r.accounts.statement(id, limit, beforeSeq ?? undefined),
  journalPosition: (r: RegionRepositories, id: string) => r.accounts.journalPosition(id),
  transfer: (r: RegionRepositories, id: string) => r.transfers.get(id),
  transferSource: (r: RegionRepositories, id: string) => r.transfers.source(id),
  captureOfHold: (r: RegionRepositories, holdId: string) => r.transfers.captureOfHold(holdId),
  hold: (r: RegionRepositories, id: string) => r.holds.get(id),
  accountEvents: (r: RegionRepositories, id: string, afterN: number, limit: number) => r.events.ofAccount(id, afterN, limit),
  tenantEvents: (r: RegionRepositories, tenantId: string, after: ev.EventPosition | null, limit: number) => r.events.ofTenant(tenantId, after, limit),
  shard: (r: RegionRepositories, id: string) => r.shards.get(id),
  shards: (r: RegionRepositories) => r.shards.list(),
} as const;

export type RegionRead = keyof typeof REGION_READS;
type Rest<F> = F extends (r: RegionRepositories, ...args: infer A) => unknown ? A : never;
export type RegionReadArgs<K extends RegionRead> = Rest<(typeof REGION_READS)[K]>;
export type RegionReadResult<K extends RegionRead> = Awaited<ReturnType<(typeof REGION_READS)[K]>>;

/** Runs a region read on the region's database, here or at a node of that region. */
export type RegionReader = <K extends RegionRead>(region: Region, op: K, ...args: RegionReadArgs<K>) => Promise<RegionReadResult<K>>;

/** Runs `op` on these repositories (the local side of a RegionReader). */
export function runRegionRead<K extends RegionRead>(r: RegionRepositories, op: K, args: RegionReadArgs<K>): Promise<RegionReadResult<K>> {
  const f = REGION_READS[op] as unknown as (r: RegionRepositories, ...a: RegionReadArgs<K>) => Promise<RegionReadResult<K>>;
  return f(r, ...args);
}

const regionOr = (home: Region, read: (id: string) => Region | undefined) => (id: string): Region => read(id) ?? home;

/**
 * What the payments layer works through. `home` is this node's region database; `read` sends
 * reads by id to the id's region; `control` holds tenants, keys and limits, and the decisions
 * of linked batch groups (one arbiter for a group whose holds are in several regions).
 */
export function makeRepositories(home: { region: Region; repos: RegionRepositories }, opts: {
  control?: Pool; homePool: Pool; read?: RegionReader; writable?: (region: Region) => RegionRepositories | undefined;
  /** Every region with a database of its own (REGION_DATABASE_URLS); none: the home database holds every region's rows. */
  regions?: readonly Region[];
}) {
  const writable = opts.writable ?? ((region: Region) => (region === home.region ? home.repos : undefined));
  const control = opts.control ?? opts.homePool;
  const local = home.repos;
  const base: RegionReader = opts.read ?? ((_region, op, ...args) => runRegionRead(local, op, args));
  const read: RegionReader = (region, op, ...args) => base(region, op, ...args).catch((err: unknown) => {
    throw regionFailure(region, err);
  });
  const ofAccount = regionOr(home.region, (id) => (parseAccountId(id) ? regionOf(id as AccountId) : undefined));
  const ofTransfer = regionOr(home.region, (id) => (parseTransferId(id) ? regionOfTransfer(id as TransferId) : undefined));
  const ofHold = regionOr(home.region, (id) => (parseHoldId(id) ? regionOfHold(id as HoldId) : undefined));
  const ofShard = regionOr(home.region, (id) => { const s = parseShardId(id); return s ? shardParts(s).region : undefined; });
  return {
    ...controlRepositories(control),
    accounts: {
      find: (id: string) => read(ofAccount(id), 'account', id),
      statement: (id: string, limit: number, beforeSeq: number | undefined) => read(ofAccount(id), 'statement', id, limit, beforeSeq ?? null),
      journalPosition: (id: string) => read(ofAccount(id), 'journalPosition', id),
    },
    transfers: {
      get: (id: string) => read(ofTransfer(id), 'transfer', id),
      captureOfHold: (holdId: string) => read(ofHold(holdId), 'captureOfHold', holdId),
      source: (id: string) => read(ofTransfer(id), 'transferSource', id),
      inFlightSummary: local.transfers.inFlightSummary,
    },
    holds: {
      get: (id: string) => read(ofHold(id), 'hold', id),
    },
    events: {
      ofAccount: (id: string, afterN: number, limit: number) => read(ofAccount(id), 'accountEvents', id, afterN, limit),
      /** A tenant's events in one region database (`regions`), read there or asked of a node of that region. */
      ofTenant: (region: Region, tenantId: string, after: ev.EventPosition | null, limit: number) => read(region, 'tenantEvents', tenantId, after, limit),
      /**
       * The databases events are in, each with the key a cursor names it by: each region's own,
       * or `*`, the home database holding every region's (the same one whichever node reads it).
       */
      databases: (): { key: string; region: Region }[] =>
        (opts.regions && opts.regions.length > 0 ? opts.regions.map((region) => ({ key: region, region })) : [{ key: '*', region: home.region }]),
    },
    groups: {
      decide: onControlPlane((groupId: string, want: 'commit' | 'abort') => q.decideGroup(control, groupId, want)),
    },
    keys: {
      claimBatch: local.keys.claimBatch,
      // The admin writes' keys are kept beside the tenants and keys they created.
      deleteExpired: async (retentionMs: number) => (await local.keys.deleteExpired(retentionMs))
        + (control === opts.homePool ? 0 : await q.deleteExpiredKeys(control, retentionMs)),
      /**
       * Beside the key its command stored, in the database of the region that processed it.
       * Not kept where this node does not write that region: a replay then answers the
       * resource as it stands (src/payments/transfers.ts).
       */
      storeAnswer: (region: Region, row: AnswerRow) => writable(region)?.keys.storeAnswer(row),
      answersStored: local.keys.answersStored,
    },
    suspense: local.suspense,
    shards: {
      /** Every region's shard rows; a region whose database cannot be read is left out. */
      list: async () => {
        const regions = opts.regions ?? [];
        if (regions.length === 0) return local.shards.list();
        const lists = await Promise.all(regions.map((r) => read(r, 'shards').catch(() => [])));
        return lists.flat();
      },
      get: (id: string) => read(ofShard(id), 'shard', id),
    },
    health: local.health,
  };
}

/**
 * Tenants, keys and limits, on the control database. A failure to reach it answers
 * control_plane_unavailable (503, retryable), which the payments layer's cache tells apart
 * from an answer; a failure that is our bug (a bad statement, a broken constraint) stays one.
 */
function controlRepositories(control: Pool) {
  return {
    tenants: {
      get: onControlPlane((id: string) => q.getTenant(control, id)),
      list: onControlPlane((limit: number) => q.listTenants(control, limit)),
      createOnce: onControlPlane((k: Parameters<typeof q.createTenantOnce>[1], t: Parameters<typeof q.createTenantOnce>[2]) => q.createTenantOnce(control, k, t)),
      limits: onControlPlane((id: string) => getTenantLimits(control, id)),
      setLimits: onControlPlane((id: string, limits: TenantLimits) => setTenantLimits(control, id, limits)),
    },
    apiKeys: {
      principal: onControlPlane((key: string) => q.findPrincipal(control, key)),
      countAdmin: onControlPlane(() => q.countAdminKeys(control)),
      insert: onControlPlane((k: Parameters<typeof q.insertKey>[1]) => q.insertKey(control, k)),
      createOnce: onControlPlane((k: Parameters<typeof q.createKeyOnce>[1], a: Parameters<typeof q.createKeyOnce>[2]) => q.createKeyOnce(control, k, a)),
      revoke: onControlPlane((tenantId: string, keyId: string) => q.revokeKey(control, tenantId, keyId)),
    },
  };
}

/** SQLSTATE classes of a statement that is wrong, not of a database out of reach: data exception, integrity, syntax or access rule. */
const OUR_BUG = /^(22|23|42)[0-9A-Z]{3}$/;

/** A read of a region's database that failed for want of the database: region_unavailable (503, retryable); our bugs stay ours. */
function regionFailure(region: Region, err: unknown): unknown {
  if (err instanceof GeopayError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && OUR_BUG.test(code)) return err;
  return new GeopayError('region_unavailable', `the database of region ${region} could not be read`, { cause: err });
}

function onControlPlane<A extends unknown[], R>(read: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args) => {
    try {
      return await read(...args);
    } catch (err) {
      const code = (err as { code?: unknown } | null)?.code;
      if (typeof code === 'string' && OUR_BUG.test(code)) throw err;
      throw new GeopayError('control_plane_unavailable', undefined, { cause: err });
    }
  };
}

export type Repositories = ReturnType<typeof makeRepositories>;
export type { TenantLimits } from './limits.ts';
export type { SuspenseRow } from './suspense.ts';
export type { EventPosition, PublishedMark, StoredEvent } from './events.ts';
export type { Principal, DirectoryEntry, TenantRow, PostingView, KeyedCreate, DueHold, InFlightTransfer, ShardRow, WorkClaim } from './queries.ts';
