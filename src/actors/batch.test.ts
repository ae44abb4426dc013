// The actor's sequencing, tested without I/O: a batch decided in order and projected to one
// write set, what the batch itself knows (keys it stored, legs it applied, refunds it took),
// and the batch as parts, redone command by command after a refusal.
import { describe, expect, it } from 'vitest';
import type { AccountCommand, AccountState } from '../domain/account.ts';
import { evolve } from '../domain/account.ts';
import type { AccountId, Region, ShardId, TenantId, TransferId } from '../domain/ids.ts';
import type { Prefetched } from '../persistence/journal.ts';
import type { BatchEnv, BatchProgress } from './batch.ts';
import { batchParts, failureFor, planBatch } from './batch.ts';
import type { CommandResult, IdempotencyClaim, Pending } from './protocol.ts';

const ACC = `acc_eu_${'1'.repeat(32)}` as AccountId;
const DST = `acc_eu_${'3'.repeat(32)}` as AccountId;
const TENANT = `ten_${'2'.repeat(32)}` as TenantId;
const AT = '2025-01-01T00:00:00.000Z';
const tr = (n: number): TransferId => `tr_eu_${n.toString(16).padStart(32, '0')}` as TransferId;

const opened = evolve(undefined, {
  type: 'Opened', id: ACC, kind: 'customer', tenantId: TENANT, currency: 'EUR', region: 'eu' as Region,
  overdraftLimit: 0n, metadata: {}, at: AT,
});
const funded: AccountState = evolve(opened, { type: 'Credited', transferId: tr(1), amount: 1000n });

const NOTHING: Prefetched = { transfers: new Map(), inbound: new Map(), keys: new Map() };
const env = (over: Partial<BatchEnv> = {}): BatchEnv => ({
  accountId: ACC, shard: 'eu/1' as ShardId, epoch: 7n, nodeId: 'n1', snapshotEvery: 1000, careful: false, known: NOTHING,
  rejectionAnswer: (code) => ({ status: 499, body: { rejected: code } }), ...over,
});

const idem = (key: string): IdempotencyClaim => ({ tenantId: TENANT, key, requestHash: `h-${key}`, resourceId: null, onOk: { status: 201, body: { key } } });
const req = (cmd: AccountCommand, over: Partial<Pending> = {}): Pending => ({ cmd, reply: () => undefined, at: AT, ...over });
const debit = (n: number, amount: bigint, key?: string): Pending => req(
  { type: 'Debit', transferId: tr(n), amount, currency: 'EUR' },
  { transfer: { destinationId: DST, kind: 'withdrawal', tenantId: TENANT, metadata: null }, ...(key ? { idem: idem(key) } : {}) },
);
const credit = (n: number, amount: bigint): Pending => req({ type: 'Credit', transferId: tr(n), amount, currency: 'EUR', alreadyApplied: false });
const replies = (results: readonly CommandResult[]) => results.map((r) => (r.type === 'done' ? (r.reply.ok ? 'ok' : r.reply.code) : r.type));

describe('planBatch', () => {
  it('a credit from another region: committed as an inbound leg, its outcome answered for the source to settle by', () => {
    const us = (n: number): TransferId => `tr_us_${n.toString(16).padStart(32, '0')}` as TransferId;
    const credit = (n: number, currency = 'EUR'): Pending => req({ type: 'Credit', transferId: us(n), amount: 5n, currency: currency as 'EUR', alreadyApplied: false });
    const plan = planBatch({ state: funded, lastSnapshotSeq: 0 }, [credit(1), credit(1), credit(2, 'USD')], env());
    expect(plan.results.map((r) => (r.type === 'done' ? r.leg : r.type))).toEqual([{ refusal: null }, { refusal: null }, { refusal: 'currency_mismatch' }]);
    expect(plan.ws?.inboundLegs.map((l) => [l.transferId, l.outcome])).toEqual([[us(1), 'credited'], [us(2), 'refused']]);
    expect(plan.ws?.transferUpdates).toEqual([]);
    expect(plan.state?.balance).toBe(1005n);
    // Delivered again and read carefully: the outcome committed first, nothing written.
    const known: Prefetched = { ...NOTHING, inbound: new Map([[us(2), { outcome: 'refused' as const, refusalCode: 'account_closed', amount: 0n, refunded: 0n }]]) };
    const again = planBatch({ state: funded, lastSnapshotSeq: 0 }, [credit(2)], env({ careful: true, known }));
    expect(again.results.map((r) => (r.type === 'done' ? r.leg : r.type))).toEqual([{ refusal: 'account_closed' }]);
    expect(again.ws).toBeUndefined();
    // A domestic credit carries no leg: its commit settles the transfer row itself, and its
    // answer says at what instant (the row's updated_at). One refused, or applied before, says none.
    const domestic = planBatch({ state: funded, lastSnapshotSeq: 0 }, [
      req({ type: 'Credit', transferId: tr(9), amount: 5n, currency: 'EUR', alreadyApplied: false }),
      req({ type: 'Credit', transferId: tr(10), amount: 5n, currency: 'USD' as 'EUR', alreadyApplied: false }),
    ], env());
    expect(domestic.results[0]).toEqual({ type: 'done', reply: expect.objectContaining({ ok: true }), settledAt: AT });
    expect(domestic.ws?.transferUpdates.map((u) => [u.id, u.to, u.at])).toEqual([[tr(9), 'settled', AT], [tr(10), 'refused', AT]]);
    expect(domestic.results[1]).toEqual({ type: 'done', reply: expect.objectContaining({ ok: true }) });
    const settled: Prefetched = { ...NOTHING, transfers: new Map([[tr(11), { state: 'settled', amount: 5n, refunded: 0n }]]) };
    const redelivered = planBatch({ state: funded, lastSnapshotSeq: 0 }, [req({ type: 'Credit', transferId: tr(11), amount: 5n, currency: 'EUR', alreadyApplied: false })], env({ careful: true, known: settled }));
    expect(redelivered.results).toEqual([{ type: 'done', reply: expect.objectContaining({ ok: true }) }]);
    expect(redelivered.ws).toBeUndefined();
  });

  it('Settle at the source: the transfer row settles or is refused once; a second delivery changes nothing', () => {
    const settle = (n: number, refusal: 'account_closed' | null): Pending => req({ type: 'Settle', transferId: tr(n), refusal, alreadyApplied: false });
    const plan = planBatch({ state: funded, lastSnapshotSeq: 0 }, [settle(2, null), settle(2, null), settle(3, 'account_closed')], env());
    expect(replies(plan.results)).toEqual(['ok', 'ok', 'ok']);
    expect(plan.ws?.transferUpdates.map((u) => [u.id, u.to, u.refusalCode])).toEqual([[tr(2), 'settled', null], [tr(3), 'refused', 'account_closed']]);
    expect(plan.ws?.journal).toEqual([]);
    const known: Prefetched = { ...NOTHING, transfers: new Map([[tr(2), { state: 'settled', amount: 5n, refunded: 0n }]]) };
    expect(planBatch({ state: funded, lastSnapshotSeq: 0 }, [settle(2, null)], env({ careful: true, known })).ws).toBeUndefined();
  });

  it('decides in order against the state so far and writes one set', () => {
    const plan = planBatch({ state: funded, lastSnapshotSeq: 0 }, [debit(2, 600n, 'a'), debit(3, 600n, 'b'), debit(4, 400n, 'c')], env());
    expect(replies(plan.results)).toEqual(['ok', 'insufficient_funds', 'ok']);
    expect(plan.state?.balance).toBe(0n);
    expect(plan.ws?.journal.map((j) => [j.seq, j.amount, j.balanceAfter])).toEqual([[3, -600n, 400n], [4, -400n, 0n]]);
    expect(plan.ws?.newTransfers.map((t) => t.id)).toEqual([tr(2), tr(4)]);
    expect(plan.ws).toMatchObject({ shard: 'eu/1', epoch: 7n, nodeId: 'n1', snapshot: undefined });
    // Each key stores its answer: the fixed one when accepted, the injected rejection answer when not.
    expect(plan.ws?.idempotency.map((k) => [k.key, k.statusCode, k.response])).toEqual([
      ['a', 201, { key: 'a' }], ['b', 499, { rejected: 'insufficient_funds' }], ['c', 201, { key: 'c' }],
    ]);
  });

  it('a key used earlier in the batch, or already stored, is answered as a duplicate and writes nothing', () => {
    const stored = { requestHash: 'h-old', resourceId: null, statusCode: 201, response: { old: true } };
    const known: Prefetched = { transfers: new Map(), inbound: new Map(), keys: new Map([[`${TENANT}\u0000old`, stored]]) };
    const plan = planBatch({ state: funded, lastSnapshotSeq: 0 }, [debit(2, 10n, 'a'), debit(3, 10n, 'a'), debit(4, 10n, 'old')], env({ known }));
    expect(plan.results.map((r) => r.type)).toEqual(['done', 'duplicate', 'duplicate']);
    expect(plan.results[1]).toEqual({ type: 'duplicate', stored: { requestHash: 'h-a', resourceId: null, statusCode: 201, response: { key: 'a' } } });
    expect(plan.results[2]).toEqual({ type: 'duplicate', stored });
    expect(plan.ws?.journal).toHaveLength(1);
  });

  it('a credit delivered twice in one batch is applied once', () => {
    const plan = planBatch({ state: funded, lastSnapshotSeq: 0 }, [credit(5, 10n), credit(5, 10n)], env());
    expect(replies(plan.results)).toEqual(['ok', 'ok']);
    expect(plan.state?.balance).toBe(1010n);
    expect(plan.ws?.transferUpdates).toHaveLength(1);
  });

  it('careful: a credit whose transfer left `debited` is a no-op, and nothing is written', () => {
    const known: Prefetched = { transfers: new Map([[tr(5), { state: 'settled', amount: 10n, refunded: 0n }]]), inbound: new Map(), keys: new Map() };
    const plan = planBatch({ state: funded, lastSnapshotSeq: 0 }, [credit(5, 10n)], env({ careful: true, known }));
    expect(replies(plan.results)).toEqual(['ok']);
    expect(plan.state).toBe(funded);
    expect(plan.ws).toBeUndefined();
  });

  it('refunds of one transfer in a batch take from what is left of it', () => {
    const refund = (n: number, amount: bigint): Pending => req(
      { type: 'Refund', transferId: tr(n), originalId: tr(1), amount, currency: 'EUR', refundable: 100n },
      { transfer: { destinationId: DST, kind: 'refund', tenantId: TENANT, metadata: null } },
    );
    const plan = planBatch({ state: funded, lastSnapshotSeq: 0 }, [refund(6, 60n), refund(7, 60n), refund(8, 40n)], env());
    expect(replies(plan.results)).toEqual(['ok', 'refund_exceeds_transfer', 'ok']);
    expect(plan.ws?.refundClaims).toEqual([{ originalId: tr(1), amount: 60n, on: 'transfer' }, { originalId: tr(1), amount: 40n, on: 'transfer' }]);
  });

  it('snapshots when `snapshotEvery` postings have passed since the last', () => {
    const plan = planBatch({ state: funded, lastSnapshotSeq: 1 }, [debit(2, 1n), debit(3, 1n)], env({ snapshotEvery: 3 }));
    expect(plan.ws?.snapshot).toEqual({ accountId: ACC, seq: 4, state: plan.state });
    expect(plan.lastSnapshotSeq).toBe(4);
    const early = planBatch({ state: funded, lastSnapshotSeq: 1 }, [debit(2, 1n)], env({ snapshotEvery: 3 }));
    expect(early.ws?.snapshot).toBeUndefined();
    expect(early.lastSnapshotSeq).toBe(1);
  });
});

describe('batchParts: a batch the server reported an error for, redone command by command', () => {
  const batch = [debit(2, 100n, 'a'), debit(3, 777n, 'b'), debit(4, 100n, 'c')];
  const start = { state: funded, lastSnapshotSeq: 0 };
  const planted = Object.assign(new Error('planted'), { code: 'P0001' });

  /** Runs the parts as the writer does, failing the parts listed. */
  function redo(failing: Set<number>): BatchProgress {
    const whole = planBatch(start, batch, env()).ws!;
    const parts = batchParts(start, batch, env(), whole);
    expect(parts.whole).toBe(whole);
    expect(parts.count).toBe(3);
    let progress = parts.start;
    for (let i = 0; i < parts.count; i++) {
      const { ws, next } = parts.alone(progress, i);
      expect(ws).toBeDefined();
      progress = failing.has(i) ? parts.failed(progress, i, planted) : next;
    }
    return progress;
  }

  it('plans each part after the parts that committed, so the one that failed leaves no trace', () => {
    const progress = redo(new Set([1]));
    expect(progress.results.map((r) => r.type)).toEqual(['done', 'error', 'done']);
    expect(progress.results[1]).toEqual({ type: 'error', error: failureFor(planted) });
    expect(progress.sequence.state?.balance).toBe(800n);
    expect(progress.committed.map((ws) => ws.journal.map((j) => [j.seq, j.balanceAfter]))).toEqual([[[3, 900n]], [[4, 800n]]]);
    expect(progress.committed.map((ws) => ws.idempotency.map((k) => k.key))).toEqual([['a'], ['c']]);
  });

  it('never changes the progress it is given', () => {
    const whole = planBatch(start, batch, env()).ws!;
    const parts = batchParts(start, batch, env(), whole);
    const first = parts.alone(parts.start, 0);
    const again = parts.alone(parts.start, 0);
    expect(again.ws).toEqual(first.ws);
    expect(parts.start.results).toEqual([]);
    expect(parts.start.sequence.state).toBe(funded);
    expect(parts.start.sequence.keys.size).toBe(0);
  });

  it('a part that failed is answered internal_error when the server would fail it again, else retryable', () => {
    expect(failureFor(planted).code).toBe('internal_error');
    expect(failureFor(Object.assign(new Error('deadlock'), { code: '40P01' })).code).toBe('region_unavailable');
    expect(failureFor(new Error('connection reset')).code).toBe('region_unavailable');
  });
});
