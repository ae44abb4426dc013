// The one registry of error codes: every code the API can answer, with its meaning and the
// kind of failure it is. The HTTP status of each kind and code is the HTTP layer's business
// (src/http/errors.ts); docs/errors.md lists the same set and a test fails when they disagree.

/**
 * invalid: the request is malformed; denied: the key may not do this; not_found: no such
 * resource (or not the tenant's); conflict: an idempotency or state conflict; refused: a
 * business outcome; throttled: over a rate limit; unavailable: retryable operational
 * failure; bug: ours.
 */
export type FailureKind = 'invalid' | 'denied' | 'not_found' | 'conflict' | 'refused' | 'throttled' | 'unavailable' | 'bug';

export const ERRORS = {
  // Requests that are malformed or unauthenticated.
  validation_failed: { kind: 'invalid', title: 'The request does not match its schema' },
  malformed_json: { kind: 'invalid', title: 'The body is not valid JSON' },
  unsupported_media_type: { kind: 'invalid', title: 'The body must be application/json' },
  body_too_large: { kind: 'invalid', title: 'The body is larger than the limit' },
  invalid_amount: { kind: 'invalid', title: 'Amounts are strings of integer minor units, 1 to 2^63-1' },
  unknown_currency: { kind: 'invalid', title: 'The currency is not a supported ISO 4217 code' },
  invalid_region: { kind: 'invalid', title: 'The region is not a valid region name' },
  invalid_webhook_url: { kind: 'invalid', title: 'The webhook URL is not an https URL of a public address' },
  idempotency_key_required: { kind: 'invalid', title: 'An Idempotency-Key header is required' },
  unauthorized: { kind: 'denied', title: 'A valid API key is required' },
  forbidden: { kind: 'denied', title: 'This key may not use this endpoint' },
  not_found: { kind: 'not_found', title: 'No such route' },
  account_not_found: { kind: 'not_found', title: 'No such account' },
  transfer_not_found: { kind: 'not_found', title: 'No such transfer' },
  tenant_not_found: { kind: 'not_found', title: 'No such tenant' },
  webhook_endpoint_not_found: { kind: 'not_found', title: 'No such webhook endpoint' },
  delivery_not_found: { kind: 'not_found', title: 'No such webhook delivery' },
  key_not_found: { kind: 'not_found', title: 'No such API key' },
  // Idempotency.
  idempotency_key_reused: { kind: 'conflict', title: 'The Idempotency-Key was used with a different request' },
  idempotency_key_in_progress: { kind: 'conflict', title: 'A request with this Idempotency-Key is still in progress' },
  // Throttling: retryable after Retry-After.
  rate_limited: { kind: 'throttled', title: 'Too many requests from this tenant; retry later' },
  // Business outcomes.
  insufficient_funds: { kind: 'refused', title: 'The source account lacks available funds' },
  currency_mismatch: { kind: 'refused', title: 'The currencies of the accounts and the amount differ' },
  same_account: { kind: 'refused', title: 'Source and destination are the same account' },
  account_frozen: { kind: 'refused', title: 'The account is frozen' },
  account_closed: { kind: 'refused', title: 'The account is closed' },
  account_exists: { kind: 'conflict', title: 'An account with this id already exists' },
  balance_out_of_range: { kind: 'refused', title: 'The balance would leave the range of a signed 64-bit integer' },
  holds_outstanding: { kind: 'refused', title: 'The account has active holds' },
  hold_not_found: { kind: 'not_found', title: 'No such hold' },
  hold_not_active: { kind: 'conflict', title: 'The hold was captured in full, voided or has expired' },
  hold_expired: { kind: 'refused', title: 'The hold is past its deadline and can no longer be captured' },
  hold_in_linked_group: { kind: 'conflict', title: 'The hold belongs to a linked batch group; only its group captures or releases it' },
  capture_exceeds_hold: { kind: 'refused', title: 'The capture is larger than what the hold still reserves' },
  invalid_expiry: { kind: 'invalid', title: 'The hold expiry is outside the allowed range' },
  refund_exceeds_transfer: { kind: 'refused', title: 'The refunds would exceed the amount of the transfer' },
  transfer_not_refundable: { kind: 'refused', title: 'Only a settled transfer can be refunded' },
  linked_group_failed: { kind: 'refused', title: 'Another item of this linked group failed, so none of the group was applied' },
  balance_not_zero: { kind: 'refused', title: 'Only an account with a zero balance can be closed' },
  // Operational failures: retryable unless noted.
  mailbox_full: { kind: 'unavailable', title: 'The account is overloaded; retry later' },
  shard_unavailable: { kind: 'unavailable', title: 'The account is moving between owners; retry later' },
  request_timeout: { kind: 'unavailable', title: 'The command did not finish in time; retry with the same Idempotency-Key' },
  database_unavailable: { kind: 'unavailable', title: 'The database is unavailable; retry later' },
  region_unavailable: { kind: 'unavailable', title: 'The database of this account\'s region is unavailable; retry later' },
  draining: { kind: 'unavailable', title: 'The node is shutting down; retry later' },
  control_plane_unavailable: { kind: 'unavailable', title: 'Tenants and keys cannot be read or changed right now; retry later' },
  internal_error: { kind: 'bug', title: 'Internal error' },
} as const satisfies Record<string, { kind: FailureKind; title: string }>;

export type ErrorCode = keyof typeof ERRORS;

export function isErrorCode(raw: unknown): raw is ErrorCode {
  return typeof raw === 'string' && Object.hasOwn(ERRORS, raw);
}

/** Operational failure with a stable code; callers match on `code`, never on the message. */
export class GeopayError extends Error {
  readonly code: ErrorCode;
  /** When the client should retry, if the failure itself knows (a rate-limit window). */
  readonly retryAfterS: number | undefined;
  constructor(code: ErrorCode, message?: string, opts?: { cause?: unknown; retryAfterS?: number }) {
    super(message ?? ERRORS[code].title, opts?.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'GeopayError';
    this.code = code;
    this.retryAfterS = opts?.retryAfterS;
  }
}
