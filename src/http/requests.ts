// The request shapes both engines serve (geopay's actors and the row-locking baseline): one
// definition of each body schema and of its parsing into domain values, so the two can never
// drift apart in what they accept or in the codes they answer.
import type { Region } from '../domain/ids.ts';
import { parseRegion } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { parseAmount, parseCurrency, parseNonNegativeAmount } from '../domain/money.ts';
import { GeopayError } from '../domain/errors.ts';
import { amountString, currencyCode, idParams, idempotencyHeader, metadata } from './schemas.ts';

/** A body that moves money: `fields` plus amount, currency and metadata. */
export const moneyBody = (fields: Record<string, unknown>, required: string[]) => ({
  type: 'object', additionalProperties: false, required: [...required, 'amount', 'currency'],
  properties: { ...fields, amount: amountString, currency: currencyCode, metadata },
});

/** A route that creates a transfer: 201 settled, 202 in flight. */
export const moneySchema = (body: object) => ({
  tags: ['money'], headers: idempotencyHeader, body,
  response: { 201: { $ref: 'Transfer#' }, 202: { $ref: 'Transfer#' } },
});

/** A body that moves part of an existing resource (a capture, a refund): all that is left when no amount is given. */
export const partialMoneySchema = (tag: string) => ({
  tags: [tag], params: idParams, headers: idempotencyHeader,
  body: { type: 'object', additionalProperties: false, properties: { amount: amountString, metadata } },
  response: { 201: { $ref: 'Transfer#' }, 202: { $ref: 'Transfer#' } },
});

export const openAccountSchema = {
  tags: ['accounts'], headers: idempotencyHeader,
  body: {
    type: 'object', additionalProperties: false, required: ['currency'],
    properties: { currency: currencyCode, overdraftLimit: amountString, metadata, region: { type: 'string', maxLength: 16 } },
  },
  response: { 201: { $ref: 'Account#' } },
};

export function parseMoney(body: { amount: string; currency: string }): { amount: bigint; currency: Currency } {
  const amount = parseAmount(body.amount);
  if (!amount.ok) throw new GeopayError('invalid_amount');
  const currency = parseCurrency(body.currency);
  if (!currency.ok) throw new GeopayError('unknown_currency');
  return { amount: amount.value, currency: currency.value };
}

export interface OpenAccountBody { currency: string; overdraftLimit?: string; metadata?: Record<string, unknown>; region?: string }

/** The body of POST /v1/accounts; an account opened without a region gets the node's. */
export function parseOpenAccount(body: OpenAccountBody, nodeRegion: string): { currency: Currency; overdraftLimit: bigint; region: Region } {
  const currency = parseCurrency(body.currency);
  if (!currency.ok) throw new GeopayError('unknown_currency');
  const overdraft = parseNonNegativeAmount(body.overdraftLimit ?? '0');
  if (!overdraft.ok) throw new GeopayError('invalid_amount');
  const region = parseRegion(body.region ?? nodeRegion);
  if (!region) throw new GeopayError('invalid_region');
  return { currency: currency.value, overdraftLimit: overdraft.value, region };
}
