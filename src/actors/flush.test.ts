// The commit of a batch with its I/O faked: what is read before deciding, the redo from fresh
// reads after a lost race (bounded), and how each answer of the writer becomes the outcome.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import type { AccountState } from '../domain/account.ts';
import { evolve } from '../domain/account.ts';
import type { AccountId, Region, ShardId, TenantId, TransferId } from '../domain/ids.ts';
import type { Prefetched } from '../persistence/journal.ts';
import { WriteConflict } from '../persistence/journal.ts';
import type { Parts, PartsOutcome } from '../persistence/writer.ts';
import type { FlushDeps } from './flush.ts';
import { MAX_CONFLICT_RETRIES, flushBatch } from './flush.ts';
import type { Pending } from './protocol.ts';

const ACC = `acc_eu_${'1'.repeat(32)}` as AccountId;
const TENANT = `ten_${'2'.repeat(32)}` as TenantId;
const AT = '2025-01-01T00:00:00.000Z';
const tr = (n: number): TransferId => `tr_eu_${n.toString(16).padStart(32, '0')}` as TransferId;
const funded: AccountState = evolve(evolve(undefined, {
  type: 'Opened', id: ACC, kind: 'customer', tenantId: TENANT, currency: 'EUR', region: 'eu' as Region, overdraftLimit: 0n, metadata: {}, at: AT,
}), { type: 'Credited', transferId: tr(1), amount: 1000n });
const start = { state: funded, lastSnapshotSeq: 0 };

const credit = (n: number, over: Partial<Pending> = {}): Pending => ({
  cmd: { type: 'Credit', transferId: tr(n), amount: 5n, currency: 'EUR', alreadyApplied: false }, reply: () => undefined, at: AT, ...over,
});

type Answer = (parts: Parts<unknown>) => Promise<PartsOutcome<unknown>>;

/** Deps whose writer answers each commit with the next of `answers`; records what was asked. */
function fake(answers: Answer[], known: Prefetched = { transfers: new Map(), inbound: new Map(), keys: new Map() }) {
  const reads: { transferIds: string[]; keys: { tenantId: string; key: string }[] }[] = [];
  const commits: Parts<unknown>[] = [];
  const deps: FlushDeps = {
    accountId: ACC, shard: 'eu/1' as ShardId, nodeId: 'n1', snapshotEvery: 1000, faultCommitDelayMs: 0,
    rejectionAnswer: (code) => ({ status: 422, body: { code } }),
    read: async (transferIds, keys) => { reads.push({ transferIds, keys }); return known; },
    epoch: async () => 3n,
    writer: {
      commitParts: <P>(parts: Parts<P>): Promise<PartsOutcome<P>> => {
        commits.push(parts as Parts<unknown>);
        const answer = answers.shift();
        if (!answer) throw new Error('no answer left');
        return answer(parts as Parts<unknown>) as Promise<PartsOutcome<P>>;
      },
    },
    log: pino({ level: 'silent' }),
  };
  return { deps, reads, commits };
}

const whole: Answer = async () => ({ type: 'whole' });
const conflict: Answer = async () => { throw new WriteConflict('a key was claimed'); };

describe('flushBatch', () => {
  it('optimistic: reads nothing, commits the batch as one set of parts, one per command', async () => {
    const { deps, reads, commits } = fake([whole]);
    const out = await flushBatch(deps, start, [credit(2), credit(3)]);
    expect(reads).toEqual([]);
    expect(commits).toHaveLength(1);
    expect(commits[0]!.count).toBe(2);
    expect(commits[0]!.whole).toMatchObject({ epoch: 3n, shard: 'eu/1' });
    expect(out.wss).toEqual([commits[0]!.whole]);
    expect(out.state?.balance).toBe(1010n);
    expect(out.results.map((r) => r.type)).toEqual(['done', 'done']);
  });

  it('a lost race is redone from fresh reads of the transfers and keys the batch carries', async () => {
    const known: Prefetched = {
      transfers: new Map([[tr(2), { state: 'settled', amount: 5n, refunded: 0n }], [tr(3), { state: 'debited', amount: 5n, refunded: 0n }]]),
      inbound: new Map(),
      keys: new Map(),
    };
    const { deps, reads, commits } = fake([conflict, whole], known);
    const idem = { tenantId: TENANT, key: 'k', requestHash: 'h', resourceId: null, onOk: null };
    const out = await flushBatch(deps, start, [credit(2), credit(3, { idem })]);
    expect(reads).toEqual([{ transferIds: [tr(2), tr(3)], keys: [{ tenantId: TENANT, key: 'k' }] }]);
    expect(commits).toHaveLength(2);
    // The credit of tr(2) was applied already: only tr(3)'s remains.
    expect(out.state?.balance).toBe(1005n);
    expect(commits[1]!.whole.transferUpdates.map((u) => u.id)).toEqual([tr(3)]);
  });

  it(`gives up after ${MAX_CONFLICT_RETRIES} lost races`, async () => {
    const known: Prefetched = { transfers: new Map([[tr(2), { state: 'debited', amount: 5n, refunded: 0n }]]), inbound: new Map(), keys: new Map() };
    const { deps, commits } = fake([conflict, conflict, conflict, whole], known);
    await expect(flushBatch(deps, start, [credit(2)])).rejects.toBeInstanceOf(WriteConflict);
    expect(commits).toHaveLength(MAX_CONFLICT_RETRIES);
  });

  it('a batch redone part by part answers what became of each part', async () => {
    const byParts: Answer = async (parts) => {
      const first = parts.alone(parts.start, 0);
      const second = parts.failed(first.next, 1, Object.assign(new Error('planted'), { code: 'P0001' }));
      return { type: 'parts', progress: second, cause: Object.assign(new Error('planted'), { code: 'P0001' }) };
    };
    const { deps } = fake([byParts]);
    const out = await flushBatch(deps, start, [credit(2), credit(3)]);
    expect(out.results.map((r) => r.type)).toEqual(['done', 'error']);
    expect(out.wss.map((ws) => ws.transferUpdates.map((u) => u.id))).toEqual([[tr(2)]]);
    expect(out.state?.balance).toBe(1005n);
  });

  it('a redo that stopped rejects with its error, and is not retried even after a lost race', async () => {
    const stopped: Answer = async () => ({ type: 'stopped', error: new WriteConflict('lost during the redo') });
    const { deps, commits } = fake([stopped, whole]);
    await expect(flushBatch(deps, start, [credit(2), credit(3)])).rejects.toThrow('lost during the redo');
    expect(commits).toHaveLength(1);
  });

  it('a batch that writes nothing commits nothing', async () => {
    const { deps, commits } = fake([]);
    const idem = { tenantId: TENANT, key: 'k', requestHash: 'h', resourceId: null, onOk: null };
    const stored = { requestHash: 'h', resourceId: null, statusCode: 201, response: null };
    deps.read = async () => ({ transfers: new Map(), inbound: new Map(), keys: new Map([[`${TENANT}\u0000k`, stored]]) });
    const out = await flushBatch(deps, start, [credit(2, { idem, careful: true })]);
    expect(out).toEqual({ state: funded, results: [{ type: 'duplicate', stored }], wss: [], lastSnapshotSeq: 0 });
    expect(commits).toHaveLength(0);
  });
});
