// What a payments workflow answers, before anyone turns it into HTTP: the value it made or
// read, a failure code (a business refusal, or an item's operational failure inside a
// batch), or the answer an Idempotency-Key stored the first time, replayed verbatim.
// `replayed` marks an answer given to a repeat of a request (HTTP: `Idempotent-Replayed`).
import type { ErrorCode } from '../domain/errors.ts';
import { GeopayError } from '../domain/errors.ts';
import type { KeyedCreate } from '../persistence/repositories.ts';

export type Outcome<T> =
  | { type: 'ok'; value: T; replayed?: true }
  | { type: 'failed'; code: ErrorCode; replayed?: true }
  /** Always a replay: the answer a key stored. */
  | { type: 'stored'; status: number; body: unknown };

/**
 * The status an idempotency record stores beside its response, so that a replay answers
 * exactly what the first request answered: a create stores 201, an action on a resource 200.
 * A rejection stores what the HTTP layer's error map says (injected as `rejectionAnswer`).
 */
export const STORED_CREATED = 201;
export const STORED_OK = 200;
/** A transfer still in flight when its request stopped waiting. */
export const STORED_ACCEPTED = 202;

/** A transfer answers 201 once terminal (settled, returned), 202 while in flight. */
export function transferAnswerStatus(state: string): typeof STORED_CREATED | typeof STORED_ACCEPTED {
  return state === 'settled' || state === 'returned' ? STORED_CREATED : STORED_ACCEPTED;
}

/** The outcome as a repeat of its request hears it. */
export const replayed = <O extends Outcome<unknown>>(o: O): O => (o.type === 'stored' ? o : { ...o, replayed: true });

export const ok = <T>(value: T): Outcome<T> => ({ type: 'ok', value });

/**
 * What a keyed create on the control database answers: `value` of what it created now, else
 * the stored answer of the key's first request (the same request), refused for another
 * request under the key or while the first one is unfinished.
 */
export function keyedOutcome<C, T>(r: KeyedCreate<C>, hash: string, value: (created: C) => T): Outcome<T> {
  if (r.type === 'created') return ok(value(r.value));
  if (r.requestHash !== hash) throw new GeopayError('idempotency_key_reused');
  if (r.statusCode === null) throw new GeopayError('idempotency_key_in_progress');
  return { type: 'stored', status: r.statusCode, body: r.response };
}
export const failed = <T = never>(code: ErrorCode): Outcome<T> => ({ type: 'failed', code });
