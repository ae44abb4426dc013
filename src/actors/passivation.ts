// Passivation, decided pure: whether an actor asked to passivate snapshots first, stops, says
// no, or keeps waiting for its mailbox to drain. The actor carries out the step
// (account-actor.ts); passivation.test.ts checks each decision alone.
import type { AccountState } from '../domain/account.ts';

/** A Passivate request held until it can be answered. `wait`: hold it until the mailbox drains. */
export interface PassivationRequest { wait: boolean; done: (passivated: boolean) => void }

/** What passivation looks at of the actor's state. */
export interface PassivationView {
  phase: 'loading' | 'ready' | 'snapshotting' | 'retired';
  account: AccountState | undefined;
  lastSnapshotSeq: number;
  pending: readonly unknown[];
  inFlight: readonly unknown[] | null;
  passivation: PassivationRequest | null;
}

export type PassivationStep =
  /** Not asked, or busy: nothing to do now. */
  | { type: 'none' }
  /** Commit a snapshot of `state` first; the actor hears back in a Snapshotted message. */
  | { type: 'snapshot'; seq: number; state: AccountState }
  | FinishStep;

export type FinishStep =
  /** Idle and snapshotted: answer yes and stop. */
  | { type: 'stop' }
  /** Commands arrived meanwhile: answer no and stay. */
  | { type: 'decline' }
  /** Commands arrived, and the caller waits for a full drain: hold the request. */
  | { type: 'wait' };

/** Whether a Passivate message is answered no at once. `queued`: messages dispatched to the actor, not yet handled. */
export function declinedAtOnce(s: PassivationView, wait: boolean, queued: number): boolean {
  if (s.phase === 'retired') return true;
  return !wait && (s.phase !== 'ready' || s.inFlight !== null || s.pending.length > 0 || queued > 0);
}

/** The next step of a held request, once the actor has nothing to commit. */
export function passivationStep(s: PassivationView, queued: number): PassivationStep {
  if (!s.passivation || s.phase !== 'ready' || s.inFlight !== null || s.pending.length > 0) return { type: 'none' };
  const seq = s.account?.seq ?? 0;
  if (s.account && seq > s.lastSnapshotSeq) return { type: 'snapshot', seq, state: s.account };
  return finishStep(s.passivation, s.pending.length, queued);
}

/** Snapshotted, or nothing to snapshot: stop unless commands came in meanwhile. */
export function finishStep(request: PassivationRequest, pending: number, queued: number): FinishStep {
  if (queued > 0 || pending > 0) return request.wait ? { type: 'wait' } : { type: 'decline' };
  return { type: 'stop' };
}

/**
 * A resting account (idle, holding nothing: registry.ts) asked to passivate: it stops at once,
 * or its actor is woken to snapshot first. The decision its actor would take, from the same
 * view; anything but a stop is left to the actor.
 */
export function restingStep(account: Pick<PassivationView, 'account' | 'lastSnapshotSeq'>, queued: number): 'stop' | 'wake' {
  const view: PassivationView = { ...account, phase: 'ready', pending: [], inFlight: null, passivation: { wait: false, done: () => undefined } };
  return passivationStep(view, queued).type === 'stop' ? 'stop' : 'wake';
}

/**
 * After a snapshot committed: with commands pending the actor goes back to them (and a request
 * that does not wait is answered no); without, it finishes the passivation.
 */
export function afterSnapshot(s: PassivationView): { type: 'flush'; decline: boolean } | { type: 'finish' } {
  if (s.pending.length === 0) return { type: 'finish' };
  return { type: 'flush', decline: s.passivation !== null && !s.passivation.wait };
}
