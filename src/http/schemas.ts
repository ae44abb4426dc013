// JSON schemas of every body, param and response. Amounts are strings of minor units; the
// patterns here only shape them, the domain's parsers decide (range, currency list).
// Request amounts are only typed here: the domain parser answers every malformed one with
// the one stable code invalid_amount, rather than a schema message.
import type { ErrorCode } from '../domain/errors.ts';
import { ERRORS } from '../domain/errors.ts';
import { HOLD_ID_PATTERN, TRANSFER_ID_PATTERN } from '../domain/ids.ts';
export const amountString = { type: 'string', maxLength: 40, description: 'Integer minor units, 1 to 2^63-1, no sign or leading zeros' } as const;
export const amountOut = { type: 'string', pattern: '^[0-9]{1,19}$' } as const;
const amountOutOrZero = amountOut;
export const signedAmountString = { type: 'string', pattern: '^-?[0-9]{1,20}$' } as const;
export const currencyCode = { type: 'string', pattern: '^[A-Z]{3}$', description: 'ISO 4217 code' } as const;
export const idString = { type: 'string', minLength: 1, maxLength: 80 } as const;
export const metadata = { type: 'object', additionalProperties: true, maxProperties: 50 } as const;
// Answered ids document their shape: the region in them is the source account's (docs/api.md, "Ids").
// Paths take any idString: a malformed id answers 404 like a missing one, not 400.
const transferId = { type: 'string', pattern: TRANSFER_ID_PATTERN, description: 'tr_<region>_<32 hex>, homed in the source account\'s region' } as const;
const holdId = { type: 'string', pattern: HOLD_ID_PATTERN, description: 'hold_<region>_<32 hex>, homed in the source account\'s region' } as const;
const transferIdOrNull = { ...transferId, type: ['string', 'null'] } as const;
const holdIdOrNull = { ...holdId, type: ['string', 'null'] } as const;

export const problemSchema = {
  $id: 'Problem',
  type: 'object',
  properties: {
    type: { type: 'string' }, title: { type: 'string' }, status: { type: 'integer' },
    code: { type: 'string', enum: Object.keys(ERRORS) as ErrorCode[], description: 'Stable error code (docs/errors.md)' }, detail: { type: 'string' },
  },
  required: ['type', 'title', 'status', 'code'],
} as const;

export const accountSchema = {
  $id: 'Account',
  type: 'object',
  properties: {
    id: { type: 'string' }, tenantId: { type: ['string', 'null'] }, currency: { type: 'string' }, region: { type: 'string' },
    status: { type: 'string', enum: ['open', 'frozen', 'closed'] }, balance: signedAmountString, held: signedAmountString, available: signedAmountString,
    overdraftLimit: amountOut, seq: { type: 'integer' }, metadata, createdAt: { type: 'string' },
  },
  required: ['id', 'currency', 'region', 'status', 'balance', 'available', 'overdraftLimit', 'seq', 'createdAt'],
} as const;

export const transferSchema = {
  $id: 'Transfer',
  type: 'object',
  properties: {
    id: transferId, kind: { type: 'string', enum: ['transfer', 'deposit', 'withdrawal', 'capture', 'refund', 'suspense', 'payout'] },
    sourceAccountId: { type: 'string' }, destinationAccountId: { type: 'string' }, amount: amountOut, currency: { type: 'string' },
    state: { type: 'string', enum: ['debited', 'settled', 'refused', 'returned'] }, refusalCode: { type: ['string', 'null'] },
    holdId: holdIdOrNull, refundOf: transferIdOrNull, refunded: amountOutOrZero,
    metadata: { type: ['object', 'null'], additionalProperties: true }, createdAt: { type: 'string' }, updatedAt: { type: 'string' },
  },
  required: ['id', 'kind', 'sourceAccountId', 'destinationAccountId', 'amount', 'currency', 'state', 'createdAt', 'updatedAt'],
} as const;

export const holdSchema = {
  $id: 'Hold',
  type: 'object',
  properties: {
    id: holdId, sourceAccountId: { type: 'string' }, destinationAccountId: { type: 'string' }, amount: amountOut,
    captured: amountOut, remaining: amountOut, currency: { type: 'string' }, multiCapture: { type: 'boolean' },
    state: { type: 'string', enum: ['held', 'captured', 'voided', 'expired'] }, expiresAt: { type: 'string' },
    metadata: { type: ['object', 'null'], additionalProperties: true }, createdAt: { type: 'string' }, updatedAt: { type: 'string' },
  },
  required: ['id', 'sourceAccountId', 'destinationAccountId', 'amount', 'captured', 'remaining', 'currency', 'multiCapture', 'state', 'expiresAt', 'createdAt', 'updatedAt'],
} as const;

export const postingSchema = {
  $id: 'Posting',
  type: 'object',
  properties: {
    seq: { type: 'integer' }, kind: { type: 'string' }, amount: signedAmountString, balanceAfter: signedAmountString,
    holdId: holdIdOrNull, heldAfter: signedAmountString,
    transferId: transferIdOrNull, createdAt: { type: 'string' },
  },
  required: ['seq', 'kind', 'amount', 'balanceAfter', 'createdAt'],
} as const;

export const tenantSchema = {
  $id: 'Tenant',
  type: 'object',
  properties: { id: { type: 'string' }, name: { type: 'string' }, createdAt: { type: 'string' } },
  required: ['id', 'name', 'createdAt'],
} as const;

export const idempotencyHeader = {
  type: 'object',
  properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7E]+$' } },
} as const;

export const idParams = { type: 'object', properties: { id: idString }, required: ['id'], additionalProperties: false } as const;

// Ledger events (src/http/routes/events.ts, docs/api.md "Events").
/** The tenant feed's cursor: a nextCursor, opaque. */
export const feedCursor = { type: 'string', minLength: 1, maxLength: 2000, pattern: '^[A-Za-z0-9_-]+$' } as const;
/** An event id, `<account id>.<n>`: where an account's events resume. */
export const eventIdString = { type: 'string', minLength: 1, maxLength: 200 } as const;
/** 1-1000, default 100 (checked by the payments layer, which answers validation_failed). */
export const eventPageLimit = { type: 'string', pattern: '^[0-9]{1,4}$' } as const;

const ledgerEvent = {
  type: 'object',
  description: 'A committed change of an account: `data` is the posting, transfer or hold as the change left it',
  properties: {
    id: { type: 'string', description: '<account id>.<n>, n the event\'s number in the account\'s order (1, 2, ... gapless)' },
    type: { type: 'string', enum: ['posting.created', 'transfer.debited', 'transfer.settled', 'transfer.refused', 'transfer.returned', 'hold.authorized', 'hold.captured', 'hold.voided', 'hold.expired'] },
    accountId: { type: 'string' }, tenantId: { type: ['string', 'null'] },
    seq: { type: 'integer', description: 'The account\'s journal seq after the change' },
    createdAt: { type: 'string' },
    data: { type: 'object', additionalProperties: true },
  },
  required: ['id', 'type', 'accountId', 'seq', 'createdAt', 'data'],
} as const;

const eventPage = {
  data: { type: 'array', items: ledgerEvent },
  nextCursor: { type: ['string', 'null'], description: 'Pass as `after` to resume after the last event given (null: from the first)' },
  hasMore: { type: 'boolean', description: 'More events were there already: ask again at once' },
} as const;

export const tenantEventsResponse = {
  type: 'object',
  properties: {
    ...eventPage,
    unavailableRegions: { type: 'array', items: { type: 'string' }, description: 'Regions whose events could not be read now; the cursor resumes them where they were' },
  },
  required: ['data', 'nextCursor', 'hasMore', 'unavailableRegions'],
} as const;

export const accountEventsResponse = {
  description: 'A page of the account\'s events (application/json), or, when the request accepts text/event-stream, the live stream',
  content: {
    'application/json': { schema: { type: 'object', properties: eventPage, required: ['data', 'nextCursor', 'hasMore'] } },
    'text/event-stream': {
      schema: { type: 'string', description: 'Server-Sent Events: `id:` the event id, `event:` its type, `data:` the event as JSON; comment lines as heartbeats' },
    },
  },
} as const;
