// What a payments workflow answers, before anyone turns it into HTTP: the value it made or
// read, a failure code (a business refusal, or an item's operational failure inside a
// batch), or the answer an Idempotency-Key stored the first time, replayed verbatim.
import type { ErrorCode } from '../domain/errors.ts';

export type Outcome<T> =
  | { type: 'ok'; value: T }
  | { type: 'failed'; code: ErrorCode }
  | { type: 'stored'; status: number; body: unknown };

/**
 * The status an idempotency record stores beside its response, so that a replay answers
 * exactly what the first request answered: a create stores 201, an action on a resource 200.
 * A rejection stores what the HTTP layer's error map says (injected as `rejectionAnswer`).
 */
export const STORED_CREATED = 201;
export const STORED_OK = 200;

export const ok = <T>(value: T): Outcome<T> => ({ type: 'ok', value });
export const failed = <T = never>(code: ErrorCode): Outcome<T> => ({ type: 'failed', code });
