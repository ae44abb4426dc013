// A small typed layer over nact: typed refs, a tell, and an ask of our own that carries its
// resolver in the message (nact's query() can hand a reply to the wrong caller under load).
// nact drops a message told to a stopped actor without a word; here that is a bug, and asserts.
import assert from 'node:assert/strict';
import nact from 'nact';
import { GeopayError } from '../domain/errors.ts';

/** Only this module writes `unhandled` and `stopped`. */
export interface ActorRef<M> {
  readonly __msg?: M;
  readonly raw: unknown;
  /** Told and not yet handled: with none, the actor can stop without dropping a message. */
  unhandled: number;
  stopped: boolean;
}
export interface ActorSystem { readonly raw: unknown }

type Handler<S, M> = (state: S, msg: M, self: ActorRef<M>) => S | Promise<S>;

export function startSystem(name: string): ActorSystem {
  return { raw: nact.start({ name } as never) };
}

export function stopSystem(sys: ActorSystem): void {
  nact.stop(sys.raw as never);
}

/**
 * Spawns an actor whose handler never throws into nact: nact would stop the actor and drop
 * its mailbox without a word. A handler fault is reported to `onFault` and the actor goes on
 * with its previous state, so the owner can retire it and answer every queued message.
 */
export function spawn<S, M>(parent: ActorSystem, name: string, initial: S, handler: Handler<S, M>, onFault: (err: unknown, msg: M) => void): ActorRef<M> {
  let selfRef: ActorRef<M>;
  const raw = nact.spawn(
    parent.raw as never,
    async (state: S, msg: M) => {
      selfRef.unhandled--;
      try {
        return await handler(state, msg, selfRef);
      } catch (err) {
        onFault(err, msg);
        return state;
      }
    },
    name,
    { initialState: initial },
  );
  selfRef = { raw, unhandled: 0, stopped: false };
  return selfRef;
}

export function tell<M>(ref: ActorRef<M>, msg: M): void {
  assert.equal(ref.stopped, false, 'a message told to a stopped actor would be lost');
  ref.unhandled++;
  nact.dispatch(ref.raw as never, msg as never);
}

export function stopActor(ref: ActorRef<unknown>): void {
  ref.stopped = true;
  nact.stop(ref.raw as never);
}

/**
 * Sends a message built around a resolver and waits for it at most `timeoutMs`. A timed-out
 * ask does not cancel the work: the command may still commit, which is why every mutating
 * request carries an idempotency key.
 */
export function ask<M, R>(ref: ActorRef<M>, build: (reply: (r: R) => void) => M, timeoutMs: number): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      reject(new GeopayError('request_timeout'));
    }, timeoutMs);
    tell(ref, build((r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(r);
    }));
  });
}
