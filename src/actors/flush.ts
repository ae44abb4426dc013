// The commit of one batch, the actor's async step: read what the batch must know, plan it
// (batch.ts), hand it to the node's writer, and redo it from fresh reads when it lost a race.
// A batch that failed with an error the server reported is not retried here: redoing it
// command by command is the writer's one retry policy for a failed commit (writer.ts in
// src/persistence).
import type { Logger } from 'pino';
import type { AccountState } from '../domain/account.ts';
import type { AccountId, ShardId } from '../domain/ids.ts';
import type { Prefetched, WriteSet } from '../persistence/journal.ts';
import { StaleState, WriteConflict } from '../persistence/journal.ts';
import type { GroupWriter, PartsOutcome } from '../persistence/writer.ts';
import type { BatchEnv, BatchPlan, BatchProgress, BatchStart } from './batch.ts';
import { batchParts, keyedCreation, planBatch, refusedKeyedCreation } from './batch.ts';
import type { CommandResult, Pending, RejectionAnswer } from './protocol.ts';

export interface FlushDeps {
  accountId: AccountId;
  shard: ShardId;
  nodeId: string;
  snapshotEvery: number;
  rejectionAnswer: RejectionAnswer;
  /** Tests only: a pause between deciding and committing (see FAULT_COMMIT_DELAY_MS). */
  faultCommitDelayMs: number;
  /** The states of the transfers, the idempotency keys and the holds a careful batch reads before deciding. */
  read: (transferIds: string[], keys: { tenantId: string; key: string }[], holdIds: string[]) => Promise<Prefetched>;
  /** The epoch the shard is written at; rejects with shard_unavailable once it is lost. */
  epoch: () => Promise<bigint>;
  writer: Pick<GroupWriter, 'commitParts'>;
  log: Logger;
}

/** What became of a batch: the state after it, a result per command, the write sets committed. */
export interface FlushOutcome {
  state: AccountState | undefined;
  results: CommandResult[];
  wss: WriteSet[];
  lastSnapshotSeq: number;
}

/**
 * What a batch starts from: the actor's committed state, and the shard epoch that state was
 * loaded at (absent: not checked, as in tests that plan without an owner).
 */
export interface FlushStart extends BatchStart { loadedAt?: bigint }

/** Redoing a batch that lost a race, from fresh reads, at most this many times in all. */
export const MAX_CONFLICT_RETRIES = 3;

const NOTHING_KNOWN: Prefetched = { transfers: new Map(), inbound: new Map(), keys: new Map() };

/**
 * Decides a batch in order against `start` and commits it in one write set. Rejects when the
 * outcome is not known for every command (connection lost, shard fenced, too many races):
 * the actor then answers the whole batch and reloads from the journal. Rejects with
 * StaleState, before deciding, when `start` was loaded at another epoch than the one the batch
 * would write at, and when the journal is ahead of it: the actor reloads and redoes the batch.
 */
export async function flushBatch(deps: FlushDeps, start: FlushStart, batch: readonly Pending[]): Promise<FlushOutcome> {
  // Optimistic first: a fresh key and a first delivery of a credit are the common case, and
  // the commit's conditional writes catch the rest (GP002). A conflict, or a batch holding
  // a redelivery, reads what it needs before deciding.
  let careful = batch.some((r) => r.careful === true);
  for (let attempt = 1; ; attempt++) {
    let env = await envFor(deps, batch, careful);
    // Loaded under an earlier take of the shard, the state may miss what another owner wrote
    // meanwhile: deciding on it could refuse what the account covers, or collide in the journal.
    if (start.loadedAt !== undefined && env.epoch !== start.loadedAt) throw new StaleState(`loaded at epoch ${start.loadedAt}, the shard is at epoch ${env.epoch}`);
    let plan = planBatch(start, batch, env);
    if (!careful && refusedKeyedCreation(batch, plan.results)) {
      // A refusal is stored under its key for good: first make sure it is not the late retry
      // of a transfer or hold that exists (the read finds it by its derived id).
      careful = true;
      env = await envFor(deps, batch, careful);
      plan = planBatch(start, batch, env);
    }
    if (plan.ws === undefined) return { state: plan.state, results: plan.results, wss: [], lastSnapshotSeq: start.lastSnapshotSeq };
    if (deps.faultCommitDelayMs > 0) await new Promise((r) => setTimeout(r, deps.faultCommitDelayMs));
    let outcome: PartsOutcome<BatchProgress>;
    try {
      outcome = await deps.writer.commitParts(batchParts(start, batch, env, plan.ws));
    } catch (err) {
      // A stale state is the actor's to reload; fresh reads alone would collide again.
      if (!(err instanceof WriteConflict) || err instanceof StaleState || attempt >= MAX_CONFLICT_RETRIES) throw err;
      if (careful) deps.log.info({ attempt, err }, 'batch conflicted; redoing it');
      careful = true;
      continue;
    }
    return outcomeOf(plan, plan.ws, outcome, deps.log);
  }
}

async function envFor(deps: FlushDeps, batch: readonly Pending[], careful: boolean): Promise<BatchEnv> {
  const [known, epoch] = await Promise.all([careful ? readFor(deps, batch) : NOTHING_KNOWN, deps.epoch()]);
  return {
    accountId: deps.accountId, shard: deps.shard, epoch, nodeId: deps.nodeId, snapshotEvery: deps.snapshotEvery,
    careful, known, rejectionAnswer: deps.rejectionAnswer,
  };
}

/** Reads the transfers a batch would credit, return or refund, the keys it carries and what its keyed commands would create. */
function readFor(deps: FlushDeps, batch: readonly Pending[]): Promise<Prefetched> {
  const transferIds: string[] = [];
  const keys: { tenantId: string; key: string }[] = [];
  const holdIds: string[] = [];
  for (const r of batch) {
    if (r.cmd.type === 'Credit' || r.cmd.type === 'Return' || r.cmd.type === 'Settle') transferIds.push(r.cmd.transferId);
    if (r.cmd.type === 'Refund') transferIds.push(r.cmd.originalId);
    if (r.idem) keys.push({ tenantId: r.idem.tenantId, key: r.idem.key });
    const made = keyedCreation(r);
    if (made && 'transferId' in made) transferIds.push(made.transferId);
    if (made && 'holdId' in made) holdIds.push(made.holdId);
  }
  return deps.read(transferIds, keys, holdIds);
}

function outcomeOf(plan: BatchPlan, whole: WriteSet, outcome: PartsOutcome<BatchProgress>, log: Logger): FlushOutcome {
  switch (outcome.type) {
    case 'whole':
      return { state: plan.state, results: plan.results, wss: [whole], lastSnapshotSeq: plan.lastSnapshotSeq };
    case 'parts': {
      const { progress } = outcome;
      log.warn({ err: outcome.cause, size: plan.results.length }, 'batch refused by the database; its commands were committed one at a time');
      return { state: progress.sequence.state, results: [...progress.results], wss: [...progress.committed], lastSnapshotSeq: progress.lastSnapshotSeq };
    }
    case 'stopped':
      throw outcome.error;
    default: {
      const never: never = outcome;
      throw new Error(`unknown commit outcome ${JSON.stringify(never)}`);
    }
  }
}
