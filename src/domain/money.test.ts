// Amounts and currencies are parsed once, at the edge; these tests pin what the parsers let
// through. Anything accepted here reaches a BIGINT column, so the bounds are tested exactly.
import { describe, it, expect } from 'vitest';
import {
  CURRENCIES, MAX_AMOUNT, currencyExponent, formatAmount, parseAmount, parseCurrency,
  parseNonNegativeAmount,
} from './money.ts';

describe('parseAmount', () => {
  it.each([
    ['1', 1n],
    ['1050', 1050n],
    ['9007199254740993', 9007199254740993n], // above 2^53: must not pass through a float
    ['9223372036854775807', 9223372036854775807n],
  ])('accepts %j', (raw, value) => {
    expect(parseAmount(raw)).toEqual({ ok: true, value });
  });

  it('accepts exactly MAX_AMOUNT = 2^63-1', () => {
    expect(MAX_AMOUNT).toBe(9223372036854775807n);
    expect(parseAmount(MAX_AMOUNT.toString())).toEqual({ ok: true, value: MAX_AMOUNT });
  });

  it.each([
    '0', '-1', '+1', '1.5', '1.0', '1e3', '0x10', ' 1', '1 ', '\n1', '1\n', '', '١', // Arabic-Indic one
    '9223372036854775808', // 2^63: one past the column
    '9999999999999999999', // 19 digits, above 2^63-1
    '10000000000000000000', // 20 digits
    '1'.repeat(25),
    '0'.repeat(20) + '1', // 21 digits even though the value is 1
    '01', '0000000000000000001', // leading zeros: one spelling per amount
  ])('rejects %j', (raw) => {
    expect(parseAmount(raw)).toEqual({ ok: false, code: 'invalid_amount' });
  });

  it.each([
    ['number', 1], ['bigint', 1n], ['null', null], ['undefined', undefined], ['object', { amount: '1' }],
    ['array', ['1']], ['boolean', true], ['NaN', Number.NaN],
  ])('rejects a non-string (%s)', (_label, raw) => {
    expect(parseAmount(raw)).toEqual({ ok: false, code: 'invalid_amount' });
  });

  it('round-trips through formatAmount', () => {
    for (const v of [1n, 1050n, MAX_AMOUNT]) {
      const parsed = parseAmount(formatAmount(v));
      expect(parsed).toEqual({ ok: true, value: v });
    }
  });
});

describe('parseNonNegativeAmount', () => {
  it('accepts "0" and positive amounts', () => {
    expect(parseNonNegativeAmount('0')).toEqual({ ok: true, value: 0n });
    expect(parseNonNegativeAmount('500')).toEqual({ ok: true, value: 500n });
  });

  it.each(['-1', '', '1.5', '9223372036854775808', 0])('rejects %j', (raw) => {
    expect(parseNonNegativeAmount(raw)).toEqual({ ok: false, code: 'invalid_amount' });
  });
});

describe('parseCurrency', () => {
  it.each(['USD', 'EUR', 'JPY', 'KWD', 'GBP', 'CHF'])('accepts %s', (raw) => {
    expect(parseCurrency(raw)).toEqual({ ok: true, value: raw });
  });

  it('accepts every code in CURRENCIES', () => {
    for (const code of Object.keys(CURRENCIES)) {
      expect(parseCurrency(code)).toEqual({ ok: true, value: code });
    }
  });

  it.each([
    'usd', 'Usd', 'XXX', 'ABC', 'US', 'USDD', ' USD', 'USD ', '',
    // Inherited object keys must not pass for currencies.
    'toString', 'constructor', '__proto__', 'hasOwnProperty',
  ])('rejects %j', (raw) => {
    expect(parseCurrency(raw)).toEqual({ ok: false, code: 'unknown_currency' });
  });

  it.each([[840], [null], [undefined], [{}], [['USD']]])('rejects a non-string %j', (raw) => {
    expect(parseCurrency(raw)).toEqual({ ok: false, code: 'unknown_currency' });
  });
});

describe('currencyExponent', () => {
  it.each([
    ['JPY', 0], ['KRW', 0], ['USD', 2], ['EUR', 2], ['GBP', 2], ['KWD', 3], ['BHD', 3],
  ] as const)('%s has exponent %i', (code, exp) => {
    expect(currencyExponent(code)).toBe(exp);
  });

  it('only uses exponents 0, 2 and 3', () => {
    for (const exp of Object.values(CURRENCIES)) expect([0, 2, 3]).toContain(exp);
  });

  it('lists only three-letter upper-case codes', () => {
    for (const code of Object.keys(CURRENCIES)) expect(code).toMatch(/^[A-Z]{3}$/);
  });
});
