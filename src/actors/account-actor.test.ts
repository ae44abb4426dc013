// When an account actor may go to rest, decided on its state alone: only idle, holding no
// command, read or passivation request and waiting for no load, commit or snapshot. And an
// actor woken from rest starts where the last one left off.
import { describe, expect, it } from 'vitest';
import type { AccountState } from '../domain/account.ts';
import { evolve } from '../domain/account.ts';
import type { AccountId, Region } from '../domain/ids.ts';
import type { ActorState } from './account-actor.ts';
import { initialActorState, restingStateOf, wokenActorState } from './account-actor.ts';
import type { Pending } from './protocol.ts';

const account: AccountState = evolve(undefined, {
  type: 'Opened', id: `acc_eu_${'2'.repeat(32)}` as AccountId, kind: 'customer', tenantId: null, currency: 'EUR',
  region: 'eu' as Region, overdraftLimit: 0n, metadata: {}, at: '2025-01-01T00:00:00.000Z',
});
const pending = { cmd: { type: 'Freeze' }, reply: () => undefined, at: '2025-01-01T00:00:00.000Z' } as Pending;
const ready = (over: Partial<ActorState> = {}): ActorState => ({
  ...initialActorState(1_000), phase: 'ready', account, lastSnapshotSeq: 0, loadedAt: 7n, ...over,
});

describe('restingStateOf', () => {
  it('an idle ready actor rests with its account, snapshot seq and epoch, and wakes as it was', () => {
    const resting = restingStateOf(ready());
    expect(resting).toEqual({ account, lastSnapshotSeq: 0, loadedAt: 7n });
    expect(wokenActorState(resting!, 5_000)).toEqual(ready({ lastActivity: 5_000 }));
  });
  it('an actor holding or waiting for anything does not rest', () => {
    expect(restingStateOf(ready({ phase: 'loading' }))).toBeUndefined();
    expect(restingStateOf(ready({ phase: 'snapshotting' }))).toBeUndefined();
    expect(restingStateOf(ready({ phase: 'retired' }))).toBeUndefined();
    expect(restingStateOf(ready({ pending: [pending] }))).toBeUndefined();
    expect(restingStateOf(ready({ inFlight: [] }))).toBeUndefined();
    expect(restingStateOf(ready({ readers: [() => undefined] }))).toBeUndefined();
    expect(restingStateOf(ready({ passivation: { wait: true, done: () => undefined } }))).toBeUndefined();
    expect(restingStateOf(ready({ staleRedos: 1 }))).toBeUndefined();
  });
});
