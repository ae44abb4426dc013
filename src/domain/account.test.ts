// The account model, tested without I/O. Every case checks the reply, the events and the
// resulting state together (STYLE.md, "Tests"), and every rejection that it produced no events.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  available, decide, evolve, journalKind, signedAmount, withSharedEmpties,
  type AccountCommand, type AccountEvent, type AccountState, type Decision,
} from './account.ts';
import type { AccountId, HoldId, Region, TenantId, TransferId } from './ids.ts';
import type { Currency } from './money.ts';
import type { ErrorCode } from './errors.ts';

const ACC = `acc_eu_${'1'.repeat(32)}` as AccountId;
const EXT = 'ext_eu_EUR' as AccountId;
const TENANT = `ten_${'2'.repeat(32)}` as TenantId;
const REGION = 'eu' as Region;
const AT = '2025-01-01T00:00:00.000Z';
const tr = (n: number): TransferId => `tr_eu_${n.toString(16).padStart(32, '0')}` as TransferId;

function openCmd(over: Partial<Extract<AccountCommand, { type: 'Open' }>> = {}): AccountCommand {
  return {
    type: 'Open', id: ACC, kind: 'customer', tenantId: TENANT, currency: 'EUR', region: REGION,
    overdraftLimit: 0n, metadata: { ref: 'x' }, at: AT, ...over,
  };
}

/** Apply a decision's events to the state it was decided on, as the actor does after the journal write. */
function applyAll(state: AccountState | undefined, events: AccountEvent[]): AccountState | undefined {
  let s = state;
  for (const e of events) s = evolve(s, e);
  return s;
}

/** Decide, then check the reply's state is what evolving the events gives: the actor relies on it. */
function run(state: AccountState | undefined, cmd: AccountCommand): Decision & { next: AccountState | undefined } {
  const d = decide(state, cmd);
  const next = applyAll(state, d.events);
  if (d.reply.ok) expect(d.reply.state).toEqual(next);
  return { ...d, next };
}

/** Run a list of commands that must all be accepted, returning the final state. */
function given(...cmds: AccountCommand[]): AccountState {
  let s: AccountState | undefined;
  for (const c of cmds) {
    const d = run(s, c);
    if (!d.reply.ok) throw new Error(`test setup: ${c.type} rejected with ${d.reply.code}`);
    s = d.next;
  }
  if (s === undefined) throw new Error('test setup: no account');
  return s;
}

const debit = (amount: bigint, n = 1, currency: Currency = 'EUR'): AccountCommand =>
  ({ type: 'Debit', transferId: tr(n), amount, currency });
const credit = (amount: bigint, n = 1, currency: Currency = 'EUR', alreadyApplied = false): AccountCommand =>
  ({ type: 'Credit', transferId: tr(n), amount, currency, alreadyApplied });
/** A return of transfer n; were the account closed, the money would go on to suspense as transfer 0xf00 + n. */
const ret = (amount: bigint, n = 1, alreadyApplied = false): AccountCommand =>
  ({ type: 'Return', transferId: tr(n), amount, alreadyApplied, forwardId: tr(0xf00 + n) });

/** A rejection: the code, no events, and (by construction) no state change. */
function expectRejected(state: AccountState | undefined, cmd: AccountCommand, code: ErrorCode): void {
  const before = structuredClone(state);
  const d = run(state, cmd);
  expect(d.reply).toEqual({ ok: false, code });
  expect(d.events).toEqual([]);
  expect(d.next).toEqual(before);
  expect(state).toEqual(before); // decide did not mutate its input
}

/** An accepted no-op: ok with the unchanged state, and nothing to journal. */
function expectNoop(state: AccountState, cmd: AccountCommand): void {
  const before = structuredClone(state);
  const d = run(state, cmd);
  expect(d.reply).toEqual({ ok: true, state: before });
  expect(d.events).toEqual([]);
  expect(d.next).toEqual(before);
}

describe('Open', () => {
  it('opens a customer account at seq 1 with a zero balance', () => {
    const d = run(undefined, openCmd({ overdraftLimit: 500n }));
    const expected: AccountState = {
      id: ACC, kind: 'customer', tenantId: TENANT, currency: 'EUR', region: REGION, status: 'open',
      balance: 0n, held: 0n, holds: {}, overdraftLimit: 500n, seq: 1, metadata: { ref: 'x' }, createdAt: AT,
    };
    expect(d.events).toEqual([{
      type: 'Opened', id: ACC, kind: 'customer', tenantId: TENANT, currency: 'EUR', region: REGION,
      overdraftLimit: 500n, metadata: { ref: 'x' }, at: AT,
    }]);
    expect(d.reply).toEqual({ ok: true, state: expected });
    expect(d.next).toEqual(expected);
  });

  it('opens an external account', () => {
    const d = run(undefined, openCmd({ id: EXT, kind: 'external', tenantId: null, metadata: {} }));
    expect(d.events).toHaveLength(1);
    expect(d.next).toMatchObject({ id: EXT, kind: 'external', tenantId: null, status: 'open', balance: 0n, seq: 1 });
  });

  it('twice is account_exists, with no events', () => {
    const s = given(openCmd());
    expectRejected(s, openCmd(), 'account_exists');
    expectRejected(s, openCmd({ currency: 'USD' }), 'account_exists');
  });

  it.each<AccountCommand>([
    { type: 'Freeze' }, { type: 'Unfreeze' }, { type: 'Close' },
    { type: 'Debit', transferId: tr(1), amount: 1n, currency: 'EUR' },
    { type: 'Credit', transferId: tr(1), amount: 1n, currency: 'EUR', alreadyApplied: false },
    { type: 'Return', transferId: tr(1), amount: 1n, alreadyApplied: false, forwardId: tr(2) },
  ])('any other command before Open is account_not_found ($type)', (cmd) => {
    expectRejected(undefined, cmd, 'account_not_found');
  });
});

describe('Freeze / Unfreeze / Close', () => {
  it('freezes an open account', () => {
    const s = given(openCmd());
    const d = run(s, { type: 'Freeze' });
    expect(d.events).toEqual([{ type: 'Frozen' }]);
    expect(d.next).toEqual({ ...s, status: 'frozen', seq: 2 });
    expect(d.reply).toEqual({ ok: true, state: d.next });
  });

  it('freezing a frozen account is an idempotent no-op', () => {
    expectNoop(given(openCmd(), { type: 'Freeze' }), { type: 'Freeze' });
  });

  it('unfreezes a frozen account', () => {
    const s = given(openCmd(), { type: 'Freeze' });
    const d = run(s, { type: 'Unfreeze' });
    expect(d.events).toEqual([{ type: 'Unfrozen' }]);
    expect(d.next).toEqual({ ...s, status: 'open', seq: 3 });
    expect(d.reply).toEqual({ ok: true, state: d.next });
  });

  it('unfreezing an open account is an idempotent no-op', () => {
    expectNoop(given(openCmd()), { type: 'Unfreeze' });
  });

  it('closes an open account with a zero balance', () => {
    const s = given(openCmd());
    const d = run(s, { type: 'Close' });
    expect(d.events).toEqual([{ type: 'Closed' }]);
    expect(d.next).toEqual({ ...s, status: 'closed', seq: 2 });
    expect(d.reply).toEqual({ ok: true, state: d.next });
  });

  it('closes a frozen account with a zero balance', () => {
    const s = given(openCmd(), { type: 'Freeze' });
    const d = run(s, { type: 'Close' });
    expect(d.events).toEqual([{ type: 'Closed' }]);
    expect(d.next).toEqual({ ...s, status: 'closed', seq: 3 });
  });

  it('closing a closed account is an idempotent no-op', () => {
    expectNoop(given(openCmd(), { type: 'Close' }), { type: 'Close' });
  });

  it('close with a positive balance is balance_not_zero', () => {
    expectRejected(given(openCmd(), credit(1n)), { type: 'Close' }, 'balance_not_zero');
  });

  it('close with a negative balance (overdrawn) is balance_not_zero', () => {
    const s = given(openCmd({ overdraftLimit: 100n }), debit(1n));
    expect(s.balance).toBe(-1n);
    expectRejected(s, { type: 'Close' }, 'balance_not_zero');
  });

  it('an external account cannot be closed', () => {
    expectRejected(given(openCmd({ id: EXT, kind: 'external', tenantId: null })), { type: 'Close' }, 'forbidden');
  });

  it('freeze or unfreeze a closed account is account_closed', () => {
    const s = given(openCmd(), { type: 'Close' });
    expectRejected(s, { type: 'Freeze' }, 'account_closed');
    expectRejected(s, { type: 'Unfreeze' }, 'account_closed');
  });
});

describe('Debit', () => {
  it('debits within the balance', () => {
    const s = given(openCmd(), credit(1000n));
    const d = run(s, debit(400n, 7));
    expect(d.events).toEqual([{ type: 'Debited', transferId: tr(7), amount: 400n }]);
    expect(d.next).toEqual({ ...s, balance: 600n, seq: s.seq + 1 });
    expect(d.reply).toEqual({ ok: true, state: d.next });
    expect(available(d.next!)).toBe(600n);
  });

  it('debits the whole balance down to exactly zero', () => {
    const s = given(openCmd(), credit(1000n));
    const d = run(s, debit(1000n));
    expect(d.events).toEqual([{ type: 'Debited', transferId: tr(1), amount: 1000n }]);
    expect(d.next).toEqual({ ...s, balance: 0n, seq: s.seq + 1 });
  });

  it('debits into the overdraft, exactly to -overdraftLimit', () => {
    const s = given(openCmd({ overdraftLimit: 500n }), credit(100n));
    expect(available(s)).toBe(600n);
    const d = run(s, debit(600n));
    expect(d.events).toEqual([{ type: 'Debited', transferId: tr(1), amount: 600n }]);
    expect(d.next).toEqual({ ...s, balance: -500n, seq: s.seq + 1 });
    expect(available(d.next!)).toBe(0n);
  });

  it('one minor unit beyond available is insufficient_funds', () => {
    expectRejected(given(openCmd(), credit(100n)), debit(101n), 'insufficient_funds');
    expectRejected(given(openCmd({ overdraftLimit: 500n }), credit(100n)), debit(601n), 'insufficient_funds');
    expectRejected(given(openCmd()), debit(1n), 'insufficient_funds');
  });

  it('on a frozen account is account_frozen, even with funds', () => {
    expectRejected(given(openCmd(), credit(100n), { type: 'Freeze' }), debit(1n), 'account_frozen');
  });

  it('on a closed account is account_closed', () => {
    expectRejected(given(openCmd(), { type: 'Close' }), debit(1n), 'account_closed');
  });

  it('in another currency is currency_mismatch', () => {
    expectRejected(given(openCmd(), credit(1000n)), debit(1n, 1, 'USD'), 'currency_mismatch');
  });

  it('an external account goes negative without an overdraft limit, down to -(2^63-1)', () => {
    const s = given(openCmd({ id: EXT, kind: 'external', tenantId: null, overdraftLimit: 0n }));
    const big = 2n ** 63n - 1n;
    const d1 = run(s, debit(big, 1));
    expect(d1.events).toEqual([{ type: 'Debited', transferId: tr(1), amount: big }]);
    expect(d1.next).toEqual({ ...s, balance: -big, seq: 2 });
    // One more unit would not fit the journal's BIGINT: refused, nothing written.
    expectRejected(d1.next, debit(1n, 2), 'balance_out_of_range');
  });

  it('a credit that would overflow the balance is refused and the money goes back', () => {
    const big = 2n ** 63n - 1n;
    const s = given(openCmd({}), { type: 'Credit', transferId: tr(7), amount: big, currency: 'EUR', alreadyApplied: false });
    const d = run(s, { type: 'Credit', transferId: tr(8), amount: 1n, currency: 'EUR', alreadyApplied: false });
    expect(d.events).toEqual([{ type: 'CreditRefused', transferId: tr(8), reason: 'balance_out_of_range' }]);
    expect(d.next).toEqual(s);
  });

  it('an external account still refuses a wrong currency, a frozen or a closed state', () => {
    const ext = given(openCmd({ id: EXT, kind: 'external', tenantId: null }));
    expectRejected(ext, debit(1n, 1, 'USD'), 'currency_mismatch');
    expectRejected(given(openCmd({ id: EXT, kind: 'external', tenantId: null }), { type: 'Freeze' }), debit(1n), 'account_frozen');
  });
});

describe('Credit', () => {
  it('credits an open account', () => {
    const s = given(openCmd());
    const d = run(s, credit(250n, 3));
    expect(d.events).toEqual([{ type: 'Credited', transferId: tr(3), amount: 250n }]);
    expect(d.next).toEqual({ ...s, balance: 250n, seq: 2 });
    expect(d.reply).toEqual({ ok: true, state: d.next });
  });

  it('credits a frozen account (freezing stops money leaving, not arriving)', () => {
    const s = given(openCmd(), { type: 'Freeze' });
    const d = run(s, credit(250n));
    expect(d.events).toEqual([{ type: 'Credited', transferId: tr(1), amount: 250n }]);
    expect(d.next).toEqual({ ...s, balance: 250n, seq: 3 });
  });

  it('with alreadyApplied answers ok and produces no events', () => {
    expectNoop(given(openCmd(), credit(250n)), credit(250n, 1, 'EUR', true));
  });

  it('to a closed account is refused: a CreditRefused event, no balance or seq change', () => {
    const s = given(openCmd(), { type: 'Close' });
    const d = run(s, credit(250n, 9));
    expect(d.events).toEqual([{ type: 'CreditRefused', transferId: tr(9), reason: 'account_closed' }]);
    expect(d.next).toEqual(s);
    expect(d.reply).toEqual({ ok: true, state: s });
  });

  it('in a wrong currency is refused with currency_mismatch, no balance or seq change', () => {
    const s = given(openCmd(), credit(100n));
    const d = run(s, credit(250n, 9, 'JPY'));
    expect(d.events).toEqual([{ type: 'CreditRefused', transferId: tr(9), reason: 'currency_mismatch' }]);
    expect(d.next).toEqual(s);
    expect(d.reply).toEqual({ ok: true, state: s });
  });

  it('with alreadyApplied to a closed account still produces nothing', () => {
    expectNoop(given(openCmd(), { type: 'Close' }), credit(250n, 1, 'EUR', true));
  });
});

describe('Return', () => {
  it('applies to an open account', () => {
    const s = given(openCmd(), credit(100n), debit(100n, 2));
    const d = run(s, ret(100n, 2));
    expect(d.events).toEqual([{ type: 'Returned', transferId: tr(2), amount: 100n }]);
    expect(d.next).toEqual({ ...s, balance: 100n, seq: s.seq + 1 });
    expect(d.reply).toEqual({ ok: true, state: d.next });
  });

  it.each([
    ['frozen', [{ type: 'Freeze' }]],
  ] as const)('applies even on a %s account: money owed back never vanishes', (status, extra) => {
    const s = given(openCmd(), ...extra);
    expect(s.status).toBe(status);
    const d = run(s, ret(100n, 5));
    expect(d.events).toEqual([{ type: 'Returned', transferId: tr(5), amount: 100n }]);
    expect(d.next).toEqual({ ...s, balance: 100n, seq: s.seq + 1 });
    expect(d.reply).toEqual({ ok: true, state: d.next });
  });

  // Issue 9, point 10: a closed account can never send, so money it took back would be
  // stranded. It takes it (the return is journaled on it) and, in the same decision, sends it
  // on to the tenant's suspense account of its region and currency; it stays closed at 0.
  it('on a closed account applies and sends the money on to suspense: money owed back never vanishes', () => {
    const s = given(openCmd(), { type: 'Close' });
    const d = run(s, ret(100n, 5));
    const suspense = `sus_eu_EUR_${'2'.repeat(32)}`;
    expect(d.events).toEqual([
      { type: 'Returned', transferId: tr(5), amount: 100n },
      { type: 'SentToSuspense', transferId: tr(0xf05), returnedId: tr(5), destinationId: suspense, amount: 100n },
    ]);
    expect(d.next).toEqual({ ...s, status: 'closed', balance: 0n, seq: s.seq + 2 });
    expect(d.reply).toEqual({ ok: true, state: d.next });
    expect(d.events.map(signedAmount)).toEqual([100n, -100n]);
    expect(d.events.map(journalKind)).toEqual(['return', 'debit']);
  });

  it('a returned refund gives back its claim on the original (the event names it)', () => {
    const s = given(openCmd(), credit(100n), debit(100n, 2));
    const d = run(s, { type: 'Return', transferId: tr(2), amount: 100n, alreadyApplied: false, forwardId: tr(3), refundOf: tr(9) });
    expect(d.events).toEqual([{ type: 'Returned', transferId: tr(2), amount: 100n, refundOf: tr(9) }]);
    expect(d.next).toEqual({ ...s, balance: 100n, seq: s.seq + 1 });
  });

  it('with alreadyApplied produces nothing', () => {
    expectNoop(given(openCmd(), credit(100n), debit(100n, 2), ret(100n, 2)), ret(100n, 2, true));
  });
});

describe('journal sequencing', () => {
  it('seq increments once per journaled event and not for CreditRefused or no-ops', () => {
    let s: AccountState | undefined;
    const steps: [AccountCommand, number][] = [
      [openCmd({ overdraftLimit: 10n }), 1],
      [credit(100n, 1), 2],
      [{ type: 'Freeze' }, 3],
      [{ type: 'Freeze' }, 3], // idempotent: no event
      [debit(1n, 2), 3], // rejected: frozen
      [{ type: 'Unfreeze' }, 4],
      [debit(110n, 3), 5],
      [credit(5n, 4, 'USD'), 5], // CreditRefused: not journaled on the account
      [credit(5n, 1, 'EUR', true), 5], // already applied
      [ret(110n, 3), 6],
      [ret(110n, 3, true), 6],
      [debit(100n, 5), 7],
      [{ type: 'Close' }, 8],
      [{ type: 'Close' }, 8],
      [credit(1n, 6), 8], // CreditRefused on closed
    ];
    for (const [cmd, seq] of steps) {
      const d = run(s, cmd);
      const journaled = d.events.filter((e) => journalKind(e) !== undefined).length;
      expect(d.next!.seq - (s?.seq ?? 0)).toBe(journaled);
      expect(d.next!.seq).toBe(seq);
      s = d.next;
    }
    expect(s).toMatchObject({ status: 'closed', balance: 0n, seq: 8 });
  });

  it('journalKind and signedAmount classify every event', () => {
    const events: [AccountEvent, string | undefined, bigint][] = [
      [{ type: 'Opened', id: ACC, kind: 'customer', tenantId: null, currency: 'EUR', region: REGION, overdraftLimit: 0n, metadata: {}, at: AT }, 'open', 0n],
      [{ type: 'Frozen' }, 'freeze', 0n],
      [{ type: 'Unfrozen' }, 'unfreeze', 0n],
      [{ type: 'Closed' }, 'close', 0n],
      [{ type: 'Debited', transferId: tr(1), amount: 7n }, 'debit', -7n],
      [{ type: 'Credited', transferId: tr(1), amount: 7n }, 'credit', 7n],
      [{ type: 'Returned', transferId: tr(1), amount: 7n }, 'return', 7n],
      [{ type: 'CreditRefused', transferId: tr(1), reason: 'account_closed' }, undefined, 0n],
    ];
    for (const [e, kind, amount] of events) {
      expect(journalKind(e)).toBe(kind);
      expect(signedAmount(e)).toBe(amount);
    }
  });

  it('evolve refuses events out of order (our own bug, so it throws)', () => {
    expect(() => evolve(undefined, { type: 'Credited', transferId: tr(1), amount: 1n })).toThrow();
    const s = given(openCmd());
    expect(() => evolve(s, { type: 'Opened', id: ACC, kind: 'customer', tenantId: null, currency: 'EUR', region: REGION, overdraftLimit: 0n, metadata: {}, at: AT })).toThrow();
  });
});

describe('property: balance is the sum of accepted signed amounts', () => {
  type Op = { kind: 'debit' | 'credit'; amount: bigint; currency: Currency };
  const op = fc.record({
    kind: fc.constantFrom<'debit' | 'credit'>('debit', 'credit'),
    // Mostly small amounts so debits often succeed, sometimes huge ones to probe the bounds.
    amount: fc.oneof(
      { weight: 9, arbitrary: fc.bigInt({ min: 1n, max: 1_000n }) },
      { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }) },
    ),
    currency: fc.constantFrom<Currency>('EUR', 'EUR', 'EUR', 'EUR', 'USD'),
  });

  it('for a customer account, and it never goes below -overdraftLimit', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2_000n }), fc.array(op, { maxLength: 60 }), (limit, ops: Op[]) => {
        let s = given(openCmd({ overdraftLimit: limit }));
        let sum = 0n;
        let journaled = 1;
        ops.forEach((o, i) => {
          const cmd = o.kind === 'debit' ? debit(o.amount, i, o.currency) : credit(o.amount, i, o.currency);
          const d = run(s, cmd);
          // Replies and events agree: a rejection has no events, an acceptance is a reply with state.
          if (!d.reply.ok) expect(d.events).toEqual([]);
          for (const e of d.events) {
            sum += signedAmount(e);
            if (journalKind(e) !== undefined) journaled += 1;
          }
          // The model's own expectation of the outcome, independent of decide.
          if (o.currency !== 'EUR') {
            if (o.kind === 'debit') expect(d.reply).toEqual({ ok: false, code: 'currency_mismatch' });
            else expect(d.events).toEqual([{ type: 'CreditRefused', transferId: tr(i), reason: 'currency_mismatch' }]);
          } else if (o.kind === 'debit' && s.balance - o.amount < -limit) {
            expect(d.reply).toEqual({ ok: false, code: 'insufficient_funds' });
          } else if (o.kind === 'credit' && s.balance + o.amount > 2n ** 63n - 1n) {
            expect(d.events).toEqual([{ type: 'CreditRefused', transferId: tr(i), reason: 'balance_out_of_range' }]);
          } else {
            expect(d.events).toHaveLength(1);
            expect(signedAmount(d.events[0]!)).toBe(o.kind === 'debit' ? -o.amount : o.amount);
          }
          s = d.next!;
          expect(s.balance).toBe(sum);
          expect(s.balance).toBeGreaterThanOrEqual(-limit);
          expect(s.balance).toBeLessThanOrEqual(2n ** 63n - 1n);
          expect(s.seq).toBe(journaled);
        });
      }),
    );
  });
});

describe('empty holds and metadata, shared', () => {
  const hold = `hold_eu_${'3'.repeat(32)}` as HoldId;
  const opened = (metadata: Record<string, unknown>) => run(undefined, openCmd({ metadata })).next!;

  it('accounts without holds or metadata share one frozen empty of each; states are never changed in place', () => {
    const a = opened({});
    const b = opened({});
    expect(a.holds).toBe(b.holds);
    expect(a.metadata).toBe(b.metadata);
    expect(Object.isFrozen(a.holds) && Object.isFrozen(a.metadata)).toBe(true);
    expect(opened({ ref: 'x' }).metadata).toEqual({ ref: 'x' });
  });

  it('holds placed and released go back to the shared empty, with the amounts right', () => {
    const base = opened({});
    const funded = run(base, { type: 'Credit', transferId: tr(1), amount: 100n, currency: 'EUR', alreadyApplied: false }).next!;
    const placed = run(funded, { type: 'Authorize', holdId: hold, destinationId: EXT, amount: 40n, currency: 'EUR', multiCapture: false, expiresAt: '2030-01-01T00:00:00.000Z' }).next!;
    expect(placed.holds[hold]).toMatchObject({ amount: 40n, remaining: 40n });
    expect(base.holds).toEqual({});
    const voided = run(placed, { type: 'Void', holdId: hold }).next!;
    expect(voided.holds).toBe(base.holds);
    expect(voided).toMatchObject({ balance: 100n, held: 0n });
  });

  it('a state read back from storage takes the shared empties, and keeps what is not empty', () => {
    const stored = { ...opened({}), holds: {}, metadata: {} };
    const compacted = withSharedEmpties(stored);
    expect(compacted.holds).toBe(opened({}).holds);
    expect(compacted.metadata).toBe(opened({}).metadata);
    expect(compacted).toEqual(stored);
    const kept = withSharedEmpties({ ...stored, metadata: { ref: 'y' } });
    expect(kept.metadata).toEqual({ ref: 'y' });
  });
});
