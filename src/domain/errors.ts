// The one registry of error codes. Every code the API can answer is here, with its HTTP
// status; docs/errors.md lists the same set and a test fails when the two disagree.

export const ERRORS = {
  // Requests that are malformed or unauthenticated.
  validation_failed: { status: 400, title: 'The request does not match its schema' },
  malformed_json: { status: 400, title: 'The body is not valid JSON' },
  unsupported_media_type: { status: 415, title: 'The body must be application/json' },
  body_too_large: { status: 413, title: 'The body is larger than the limit' },
  invalid_amount: { status: 400, title: 'Amounts are strings of integer minor units, 1 to 2^63-1' },
  unknown_currency: { status: 400, title: 'The currency is not a supported ISO 4217 code' },
  invalid_region: { status: 400, title: 'The region is not a valid region name' },
  idempotency_key_required: { status: 400, title: 'An Idempotency-Key header is required' },
  unauthorized: { status: 401, title: 'A valid API key is required' },
  forbidden: { status: 403, title: 'This key may not use this endpoint' },
  not_found: { status: 404, title: 'No such route' },
  account_not_found: { status: 404, title: 'No such account' },
  transfer_not_found: { status: 404, title: 'No such transfer' },
  tenant_not_found: { status: 404, title: 'No such tenant' },
  // Idempotency.
  idempotency_key_reused: { status: 422, title: 'The Idempotency-Key was used with a different request' },
  idempotency_key_in_progress: { status: 409, title: 'A request with this Idempotency-Key is still in progress' },
  // Throttling: retryable after Retry-After.
  rate_limited: { status: 429, title: 'Too many requests from this tenant; retry later' },
  // Business outcomes.
  insufficient_funds: { status: 422, title: 'The source account lacks available funds' },
  currency_mismatch: { status: 422, title: 'The currencies of the accounts and the amount differ' },
  same_account: { status: 422, title: 'Source and destination are the same account' },
  account_frozen: { status: 422, title: 'The account is frozen' },
  account_closed: { status: 422, title: 'The account is closed' },
  account_exists: { status: 409, title: 'An account with this id already exists' },
  balance_out_of_range: { status: 422, title: 'The balance would leave the range of a signed 64-bit integer' },
  holds_outstanding: { status: 422, title: 'The account has active holds' },
  hold_not_found: { status: 404, title: 'No such hold' },
  hold_not_active: { status: 409, title: 'The hold was captured in full, voided or has expired' },
  hold_expired: { status: 422, title: 'The hold is past its deadline and can no longer be captured' },
  capture_exceeds_hold: { status: 422, title: 'The capture is larger than what the hold still reserves' },
  invalid_expiry: { status: 400, title: 'The hold expiry is outside the allowed range' },
  refund_exceeds_transfer: { status: 422, title: 'The refunds would exceed the amount of the transfer' },
  transfer_not_refundable: { status: 422, title: 'Only a settled transfer can be refunded' },
  linked_group_failed: { status: 422, title: 'Another item of this linked group failed, so none of the group was applied' },
  balance_not_zero: { status: 422, title: 'Only an account with a zero balance can be closed' },
  // Operational failures: retryable unless noted.
  mailbox_full: { status: 503, title: 'The account is overloaded; retry later' },
  shard_unavailable: { status: 503, title: 'The account is moving between owners; retry later' },
  request_timeout: { status: 503, title: 'The command did not finish in time; retry with the same Idempotency-Key' },
  database_unavailable: { status: 503, title: 'The database is unavailable; retry later' },
  draining: { status: 503, title: 'The node is shutting down; retry later' },
  internal_error: { status: 500, title: 'Internal error' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERRORS;

/** Operational failure with a stable code; callers match on `code`, never on the message. */
export class GeopayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryAfterS: number | undefined;
  constructor(code: ErrorCode, message?: string, opts?: { cause?: unknown; retryAfterS?: number }) {
    super(message ?? ERRORS[code].title, opts?.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'GeopayError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.retryAfterS = opts?.retryAfterS ?? (this.status === 503 ? 1 : undefined);
  }
}
