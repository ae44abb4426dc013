// The error map of the HTTP layer: each code of the domain's registry gets its HTTP status
// here, and every error leaves as application/problem+json. docs/errors.md lists the same
// codes and statuses; test/errors-doc.test.ts fails when they disagree.
import type { ErrorCode, FailureKind } from '../domain/errors.ts';
import { ERRORS as CODES } from '../domain/errors.ts';

const STATUS_OF_KIND: Record<FailureKind, number> = {
  invalid: 400, denied: 403, not_found: 404, conflict: 409, refused: 422, throttled: 429, unavailable: 503, bug: 500,
};

/** Codes whose status is not their kind's. */
const STATUS_OF_CODE: Partial<Record<ErrorCode, number>> = {
  unsupported_media_type: 415,
  body_too_large: 413,
  unauthorized: 401,
  // A key reused with another request is refused for good: the client must pick a new key.
  idempotency_key_reused: 422,
};

export function statusOf(code: ErrorCode): number {
  return STATUS_OF_CODE[code] ?? STATUS_OF_KIND[CODES[code].kind];
}

/** Every code with its status and title: the table docs/errors.md documents. */
export const ERRORS = Object.fromEntries(
  (Object.keys(CODES) as ErrorCode[]).map((code) => [code, { status: statusOf(code), title: CODES[code].title }]),
) as Record<ErrorCode, { status: number; title: string }>;

/** Seconds a client waits before retrying a 503 whose failure named no time of its own. */
export const DEFAULT_RETRY_AFTER_S = 1;

export interface Problem {
  type: string; title: string; status: number; code: ErrorCode; detail?: string;
}

export function problem(code: ErrorCode, detail?: string): Problem {
  return { type: `https://geopay.dev/errors/${code}`, title: CODES[code].title, status: statusOf(code), code, ...(detail ? { detail } : {}) };
}

/** The stored answer of a business rejection: what its idempotency key replays. */
export function rejectionAnswer(code: ErrorCode): { status: number; body: Problem } {
  return { status: statusOf(code), body: problem(code) };
}
