// The repositories the payments layer works through: every query it needs, named, bound to
// the node's pool at the composition root. Payments code holds no SQL and no pool.
import type { Pool } from './db.ts';
import * as q from './queries.ts';
import { getTenantLimits, setTenantLimits } from './limits.ts';
import type { TenantLimits } from './limits.ts';
import { listSuspense } from './suspense.ts';
import { AnswerWriter } from './answers.ts';
import type { AnswerRow } from './answers.ts';

export function makeRepositories(pool: Pool) {
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
    groups: {
      decide: (groupId: string, want: 'commit' | 'abort') => q.decideGroup(pool, groupId, want),
    },
    keys: {
      claimBatch: (tenantId: string, key: string, requestHash: string) => q.claimBatchKey(pool, tenantId, key, requestHash),
      deleteExpired: (retentionMs: number) => q.deleteExpiredKeys(pool, retentionMs),
      /** A transfer's first answer, stored in the next batched statement (src/persistence/answers.ts). */
      storeAnswer: (row: AnswerRow) => answers.store(row),
      /** Resolves once every answer handed over is written (before the pool closes). */
      answersStored: () => answers.idle(),
    },
    tenants: {
      get: (id: string) => q.getTenant(pool, id),
      list: (limit: number) => q.listTenants(pool, limit),
      createOnce: (k: Parameters<typeof q.createTenantOnce>[1], t: Parameters<typeof q.createTenantOnce>[2]) => q.createTenantOnce(pool, k, t),
      limits: (id: string) => getTenantLimits(pool, id),
      setLimits: (id: string, limits: TenantLimits) => setTenantLimits(pool, id, limits),
    },
    apiKeys: {
      principal: (key: string) => q.findPrincipal(pool, key),
      countAdmin: () => q.countAdminKeys(pool),
      insert: (k: Parameters<typeof q.insertKey>[1]) => q.insertKey(pool, k),
      createOnce: (k: Parameters<typeof q.createKeyOnce>[1], a: Parameters<typeof q.createKeyOnce>[2]) => q.createKeyOnce(pool, k, a),
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

export type Repositories = ReturnType<typeof makeRepositories>;
export type { TenantLimits } from './limits.ts';
export type { SuspenseRow } from './suspense.ts';
export type { Principal, DirectoryEntry, TenantRow, PostingView, KeyedCreate, DueHold, InFlightTransfer, ShardRow, WorkClaim } from './queries.ts';
