// Money is an integer count of minor units (bigint) in an ISO 4217 currency. No float ever
// touches an amount: amounts arrive as decimal strings and are parsed here, once.
import type { Result } from './result.ts';
import { ok, fail } from './result.ts';

/** ISO 4217 currencies geopay accepts, with their exponent (digits after the decimal point). */
export const CURRENCIES = {
  USD: 2, EUR: 2, GBP: 2, CHF: 2, CAD: 2, AUD: 2, NZD: 2, SEK: 2, NOK: 2, DKK: 2,
  PLN: 2, CZK: 2, HUF: 2, SGD: 2, HKD: 2, CNY: 2, INR: 2, BRL: 2, MXN: 2, ZAR: 2,
  JPY: 0, KRW: 0, ISK: 0, CLP: 0, VND: 0,
  KWD: 3, BHD: 3, JOD: 3, OMR: 3, TND: 3,
} as const satisfies Record<string, number>;

export type Currency = keyof typeof CURRENCIES;

/** The largest amount a signed 64-bit column holds. */
export const MAX_AMOUNT = 2n ** 63n - 1n;

export function parseCurrency(raw: unknown): Result<Currency, 'unknown_currency'> {
  if (typeof raw === 'string' && Object.hasOwn(CURRENCIES, raw)) return ok(raw as Currency);
  return fail('unknown_currency');
}

export function currencyExponent(c: Currency): number {
  return CURRENCIES[c];
}

// One spelling per number: no sign, no leading zeros, so one amount has one idempotency hash.
const DIGITS = /^[1-9][0-9]{0,18}$/;

/** A strictly positive amount of minor units, at most 2^63-1. */
export function parseAmount(raw: unknown): Result<bigint, 'invalid_amount'> {
  if (typeof raw !== 'string' || !DIGITS.test(raw)) return fail('invalid_amount');
  const v = BigInt(raw);
  if (v <= 0n || v > MAX_AMOUNT) return fail('invalid_amount');
  return ok(v);
}

/** A limit or other amount that may be zero (overdraft limits). */
export function parseNonNegativeAmount(raw: unknown): Result<bigint, 'invalid_amount'> {
  if (raw === '0') return ok(0n);
  return parseAmount(raw);
}

export function formatAmount(v: bigint): string {
  return v.toString();
}
