// Passivation's decisions, tested alone: when a Passivate request is declined at once, when
// the actor snapshots first, stops, declines or keeps waiting, and what follows a snapshot.
import { describe, expect, it } from 'vitest';
import type { AccountState } from '../domain/account.ts';
import { evolve } from '../domain/account.ts';
import type { AccountId, Region } from '../domain/ids.ts';
import type { PassivationRequest, PassivationView } from './passivation.ts';
import { afterSnapshot, declinedAtOnce, finishStep, passivationStep, restingStep } from './passivation.ts';

const account: AccountState = evolve(undefined, {
  type: 'Opened', id: `acc_eu_${'1'.repeat(32)}` as AccountId, kind: 'customer', tenantId: null, currency: 'EUR',
  region: 'eu' as Region, overdraftLimit: 0n, metadata: {}, at: '2025-01-01T00:00:00.000Z',
});
const request = (wait: boolean): PassivationRequest => ({ wait, done: () => undefined });
const view = (over: Partial<PassivationView> = {}): PassivationView => ({
  phase: 'ready', account, lastSnapshotSeq: account.seq, pending: [], inFlight: null, passivation: request(false), ...over,
});

describe('declinedAtOnce', () => {
  it('a retired actor always declines', () => {
    expect(declinedAtOnce(view({ phase: 'retired' }), true, 0)).toBe(true);
  });
  it('a request that does not wait is declined by a busy actor, for any kind of busy', () => {
    expect(declinedAtOnce(view(), false, 0)).toBe(false);
    expect(declinedAtOnce(view({ phase: 'loading' }), false, 0)).toBe(true);
    expect(declinedAtOnce(view({ inFlight: [1] }), false, 0)).toBe(true);
    expect(declinedAtOnce(view({ pending: [1] }), false, 0)).toBe(true);
    expect(declinedAtOnce(view(), false, 1)).toBe(true);
  });
  it('a request that waits is held however busy the actor is', () => {
    expect(declinedAtOnce(view({ phase: 'loading', inFlight: [1], pending: [1] }), true, 3)).toBe(false);
  });
});

describe('passivationStep', () => {
  it('nothing to do when not asked, or while busy', () => {
    expect(passivationStep(view({ passivation: null }), 0)).toEqual({ type: 'none' });
    expect(passivationStep(view({ phase: 'snapshotting' }), 0)).toEqual({ type: 'none' });
    expect(passivationStep(view({ inFlight: [1] }), 0)).toEqual({ type: 'none' });
    expect(passivationStep(view({ pending: [1] }), 0)).toEqual({ type: 'none' });
  });
  it('snapshots first when postings passed since the last snapshot', () => {
    expect(passivationStep(view({ lastSnapshotSeq: 0 }), 0)).toEqual({ type: 'snapshot', seq: account.seq, state: account });
  });
  it('stops when snapshotted and nothing is queued; an account never opened has nothing to snapshot', () => {
    expect(passivationStep(view(), 0)).toEqual({ type: 'stop' });
    expect(passivationStep(view({ account: undefined, lastSnapshotSeq: 0 }), 0)).toEqual({ type: 'stop' });
  });
  it('with messages still queued: declines, or waits when the caller waits for a drain', () => {
    expect(passivationStep(view(), 2)).toEqual({ type: 'decline' });
    expect(passivationStep(view({ passivation: request(true) }), 2)).toEqual({ type: 'wait' });
  });
});

describe('finishStep and afterSnapshot', () => {
  it('finishStep stops only when nothing is pending or queued', () => {
    expect(finishStep(request(false), 0, 0)).toEqual({ type: 'stop' });
    expect(finishStep(request(false), 1, 0)).toEqual({ type: 'decline' });
    expect(finishStep(request(true), 0, 1)).toEqual({ type: 'wait' });
  });
  it('after a snapshot: back to the commands pending, declining a request that does not wait', () => {
    expect(afterSnapshot(view())).toEqual({ type: 'finish' });
    expect(afterSnapshot(view({ pending: [1] }))).toEqual({ type: 'flush', decline: true });
    expect(afterSnapshot(view({ pending: [1], passivation: request(true) }))).toEqual({ type: 'flush', decline: false });
    expect(afterSnapshot(view({ pending: [1], passivation: null }))).toEqual({ type: 'flush', decline: false });
  });
});

describe('restingStep', () => {
  it('a resting account snapshotted up to its seq (or never opened) stops without its actor', () => {
    expect(restingStep({ account, lastSnapshotSeq: account.seq }, 0)).toBe('stop');
    expect(restingStep({ account: undefined, lastSnapshotSeq: 0 }, 0)).toBe('stop');
  });
  it('one with postings since its last snapshot, or with messages queued, is left to its actor', () => {
    expect(restingStep({ account, lastSnapshotSeq: account.seq - 1 }, 0)).toBe('wake');
    expect(restingStep({ account, lastSnapshotSeq: account.seq }, 1)).toBe('wake');
  });
});
