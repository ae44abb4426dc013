// The repositories the payments layer works through: every query it needs, named, bound to
// the node's pools at the composition root: tenants, API keys and limits to the control
// database's, everything else to the home region's. Payments code holds no SQL and no pool.
import { GeopayError } from '../domain/errors.ts';
import type { Pool } from './db.ts';
import * as q from './queries.ts';
import { getTenantLimits, setTenantLimits } from './limits.ts';
import type { TenantLimits } from './limits.ts';
import { listSuspense } from './suspense.ts';
import { AnswerWriter } from './answers.ts';
import type { AnswerRow } from './answers.ts';

/**
 * `pool` is the home region's database; `control` the control database's (tenants, keys,
 * limits), the same pool when they are one database.
 */
export function makeRepositories(pool: Pool, opts: { control?: Pool } = {}) {
  const control = opts.control ?? pool;
  const answers = new AnswerWriter(pool);
  return {
    ...controlRepositories(control),
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
    groups: {
      decide: (groupId: string, want: 'commit' | 'abort') => q.decideGroup(pool, groupId, want),
    },
    keys: {
      claimBatch: (tenantId: string, key: string, requestHash: string) => q.claimBatchKey(pool, tenantId, key, requestHash),
      // The admin writes' keys are kept beside the tenants and keys they created.
      deleteExpired: async (retentionMs: number) => (await q.deleteExpiredKeys(pool, retentionMs))
        + (control === pool ? 0 : await q.deleteExpiredKeys(control, retentionMs)),
      /** A transfer's first answer, stored in the next batched statement (src/persistence/answers.ts). */
      storeAnswer: (row: AnswerRow) => answers.store(row),
      /** Resolves once every answer handed over is written (before the pool closes). */
      answersStored: () => answers.idle(),
    },
    suspense: {
      list: (limit: number) => listSuspense(pool, limit),
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
export type { Principal, DirectoryEntry, TenantRow, PostingView, KeyedCreate, DueHold, InFlightTransfer, ShardRow, WorkClaim } from './queries.ts';
