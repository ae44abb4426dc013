// The projection of events to write-set rows and its reverse, tested without I/O: the rows
// each event kind writes, the ledger events among them, and that a history projected to rows
// and read back as recovery reads it replays to the same state, posting by posting.
import { describe, expect, it } from 'vitest';
import type { AccountEvent, AccountState } from '../domain/account.ts';
import { evolve } from '../domain/account.ts';
import type { AccountId, HoldId, Region, TenantId, TransferId } from '../domain/ids.ts';
import type { EventRow, EventSource, JournalRow, StoredAccount, StoredHold, WriteRows } from './rows.ts';
import { addRows, emptyRows, eventOfRow, rowCount, rowsOfEvent } from './rows.ts';

const ACC = `acc_eu_${'1'.repeat(32)}` as AccountId;
const DST = `acc_eu_${'3'.repeat(32)}` as AccountId;
const TENANT = `ten_${'2'.repeat(32)}` as TenantId;
const AT = '2025-01-01T00:00:00.000Z';
const tr = (n: number): TransferId => `tr_eu_${n.toString(16).padStart(32, '0')}` as TransferId;
const hold = (n: number): HoldId => `hold_eu_${n.toString(16).padStart(32, '0')}` as HoldId;

const OPENED: AccountEvent = {
  type: 'Opened', id: ACC, kind: 'customer', tenantId: TENANT, currency: 'EUR', region: 'eu' as Region,
  overdraftLimit: 0n, metadata: { ref: 'x' }, at: AT,
};

const source = (over: Partial<EventSource> = {}): EventSource => ({
  accountId: ACC, shard: 'eu/1', at: AT,
  transfer: { tenantId: TENANT, kind: 'transfer', destinationId: DST, metadata: { memo: 'm' } }, hold: undefined, ...over,
});

/** Evolves `state` by `e` and answers the rows of it, its ledger events apart. */
function project(state: AccountState | undefined, e: AccountEvent, src = source()) {
  const after = evolve(state, e);
  const { events = [], ...rows } = rowsOfEvent(e, state, after, src);
  return { after, rows, events };
}

const opened = evolve(undefined, OPENED);
const funded = evolve(opened, { type: 'Credited', transferId: tr(1), amount: 1000n });
const withHold = evolve(funded, { type: 'HoldPlaced', holdId: hold(1), destinationId: DST, amount: 300n, multiCapture: true, expiresAt: '2025-02-01T00:00:00.000Z' });

describe('rowsOfEvent: the rows of each event kind', () => {
  it('Opened: the account row and the first posting', () => {
    const { rows } = project(undefined, OPENED);
    expect(rows.account).toEqual({ id: ACC, tenantId: TENANT, kind: 'customer', currency: 'EUR', region: 'eu', shard: 'eu/1', overdraftLimit: 0n, metadata: { ref: 'x' }, at: AT });
    expect(rows.journal).toEqual({ accountId: ACC, seq: 1, kind: 'open', transferId: null, amount: 0n, balanceAfter: 0n, holdId: null, heldDelta: 0n, heldAfter: 0n, at: AT });
    expect(Object.keys(rows).sort()).toEqual(['account', 'journal']);
  });

  it('Frozen, Unfrozen, Closed: a posting and nothing else', () => {
    const frozen = project(opened, { type: 'Frozen' });
    expect(frozen.rows).toEqual({ journal: expect.objectContaining({ seq: 2, kind: 'freeze', amount: 0n }) });
    const unfrozen = project(frozen.after, { type: 'Unfrozen' });
    expect(unfrozen.rows).toEqual({ journal: expect.objectContaining({ seq: 3, kind: 'unfreeze' }) });
    expect(project(opened, { type: 'Closed' }).rows).toEqual({ journal: expect.objectContaining({ seq: 2, kind: 'close' }) });
  });

  it('Debited: a negative posting and the new transfer row (the outbox)', () => {
    const { rows } = project(funded, { type: 'Debited', transferId: tr(2), amount: 400n });
    expect(rows.journal).toEqual({ accountId: ACC, seq: 3, kind: 'debit', transferId: tr(2), amount: -400n, balanceAfter: 600n, holdId: null, heldDelta: 0n, heldAfter: 0n, at: AT });
    expect(rows.newTransfer).toEqual({ id: tr(2), tenantId: TENANT, kind: 'transfer', sourceId: ACC, destinationId: DST, amount: 400n, currency: 'EUR', metadata: { memo: 'm' }, at: AT, holdId: null, refundOf: null });
    expect(Object.keys(rows).sort()).toEqual(['journal', 'newTransfer']);
  });

  it('a Debit without its transfer record is our bug', () => {
    expect(() => project(funded, { type: 'Debited', transferId: tr(2), amount: 1n }, source({ transfer: undefined }))).toThrow('a Debit without its transfer record');
  });

  it('RefundDebited: a debit posting, a refund transfer row and the claim on the original', () => {
    const { rows } = project(funded, { type: 'RefundDebited', transferId: tr(3), originalId: tr(9), amount: 50n });
    expect(rows.journal).toMatchObject({ kind: 'debit', transferId: tr(3), amount: -50n, balanceAfter: 950n });
    expect(rows.newTransfer).toMatchObject({ id: tr(3), kind: 'refund', refundOf: tr(9), amount: 50n, destinationId: DST });
    expect(rows.refundClaim).toEqual({ originalId: tr(9), amount: 50n, on: 'transfer' });
  });

  it('Credited, CreditRefused, Returned: the transfer row moves; a refusal posts nothing', () => {
    expect(project(opened, { type: 'Credited', transferId: tr(4), amount: 10n }).rows).toEqual({
      journal: expect.objectContaining({ kind: 'credit', amount: 10n, balanceAfter: 10n }),
      transferUpdate: { id: tr(4), from: 'debited', to: 'settled', refusalCode: null, at: AT },
    });
    expect(project(opened, { type: 'CreditRefused', transferId: tr(4), reason: 'account_closed' }).rows).toEqual({
      transferUpdate: { id: tr(4), from: 'debited', to: 'refused', refusalCode: 'account_closed', at: AT },
    });
    expect(project(opened, { type: 'Returned', transferId: tr(4), amount: 10n }).rows).toEqual({
      journal: expect.objectContaining({ kind: 'return', amount: 10n }),
      transferUpdate: { id: tr(4), from: 'refused', to: 'returned', refusalCode: null, at: AT },
    });
  });

  it('a leg of a transfer from another region: an inbound leg instead of the transfer row, which is that region\'s', () => {
    const us = `tr_us_${'4'.repeat(32)}` as TransferId;
    expect(project(opened, { type: 'Credited', transferId: us, amount: 10n }).rows).toEqual({
      journal: expect.objectContaining({ kind: 'credit', amount: 10n, balanceAfter: 10n, transferId: us }),
      inboundLeg: { transferId: us, accountId: ACC, outcome: 'credited', refusalCode: null, amount: 10n, currency: 'EUR', at: AT },
    });
    expect(project(opened, { type: 'CreditRefused', transferId: us, reason: 'account_closed' }).rows).toEqual({
      inboundLeg: { transferId: us, accountId: ACC, outcome: 'refused', refusalCode: 'account_closed', amount: 0n, currency: 'EUR', at: AT },
    });
    // A refund of it claims against that inbound leg, and a refund that came back gives the claim back there.
    expect(project(funded, { type: 'RefundDebited', transferId: tr(3), originalId: us, amount: 5n }).rows.refundClaim).toEqual({ originalId: us, amount: 5n, on: 'inbound' });
    expect(project(funded, { type: 'Returned', transferId: tr(3), amount: 5n, refundOf: us }).rows.refundClaim).toEqual({ originalId: us, amount: -5n, on: 'inbound' });
  });

  it('Settled: the source region settles its transfer row, and posts nothing', () => {
    const { after, rows } = project(funded, { type: 'Settled', transferId: tr(5) });
    expect(after).toEqual(funded);
    expect(rows).toEqual({ transferUpdate: { id: tr(5), from: 'debited', to: 'settled', refusalCode: null, at: AT } });
  });

  it('HoldPlaced: a posting that moves only the held total, and the hold row', () => {
    const { rows } = project(funded, { type: 'HoldPlaced', holdId: hold(1), destinationId: DST, amount: 300n, multiCapture: true, expiresAt: '2025-02-01T00:00:00.000Z' },
      source({ hold: { tenantId: TENANT, metadata: { h: 1 }, groupId: 'grp' } }));
    expect(rows.journal).toMatchObject({ kind: 'hold', holdId: hold(1), amount: 0n, heldDelta: 300n, balanceAfter: 1000n, heldAfter: 300n });
    expect(rows.newHold).toEqual({
      id: hold(1), tenantId: TENANT, sourceId: ACC, destinationId: DST, amount: 300n, currency: 'EUR',
      multiCapture: true, expiresAt: '2025-02-01T00:00:00.000Z', metadata: { h: 1 }, at: AT, groupId: 'grp',
    });
  });

  it('HoldCaptured: a capture transfer row and the hold row updated, held while something remains', () => {
    const part = project(withHold, { type: 'HoldCaptured', holdId: hold(1), transferId: tr(5), destinationId: DST, amount: 100n, released: 0n });
    expect(part.rows.journal).toMatchObject({ kind: 'capture', amount: -100n, heldDelta: -100n, balanceAfter: 900n, heldAfter: 200n });
    expect(part.rows.newTransfer).toMatchObject({ id: tr(5), kind: 'capture', holdId: hold(1), amount: 100n });
    expect(part.rows.holdUpdate).toEqual({ id: hold(1), captured: 100n, state: 'held', at: AT });
    const rest = project(part.after, { type: 'HoldCaptured', holdId: hold(1), transferId: tr(6), destinationId: DST, amount: 200n, released: 0n });
    expect(rest.rows.holdUpdate).toEqual({ id: hold(1), captured: 300n, state: 'captured', at: AT });
  });

  it('HoldReleased: the hold row takes the reason; what was captured stays', () => {
    const { rows } = project(withHold, { type: 'HoldReleased', holdId: hold(1), amount: 300n, reason: 'expired' });
    expect(rows.journal).toMatchObject({ kind: 'release', amount: 0n, heldDelta: -300n, heldAfter: 0n });
    expect(rows.holdUpdate).toEqual({ id: hold(1), captured: 0n, state: 'expired', at: AT });
  });
});

describe('the ledger events of each event kind', () => {
  /** The event fields every event of `state`'s account carries. */
  const of = (state: AccountState, over: Partial<EventRow>): EventRow => ({
    accountId: ACC, tenantId: TENANT, seq: state.seq, at: AT, type: 'posting.created', payload: { of: 'view', view: {} as never }, ...over,
  } as EventRow);

  it('Opened: its posting, shown as the statement shows it, with the account and currency', () => {
    const { after, events } = project(undefined, OPENED);
    expect(events).toEqual([of(after, {
      payload: { of: 'view', view: { accountId: ACC, seq: 1, kind: 'open', amount: '0', balanceAfter: '0', heldAfter: '0', transferId: null, holdId: null, currency: 'EUR', createdAt: AT } },
    })]);
  });

  it('Frozen, Unfrozen, Closed: a posting each, of their kind', () => {
    for (const e of [{ type: 'Frozen' }, { type: 'Unfrozen' }, { type: 'Closed' }] as const) {
      const { events } = project(opened, e);
      expect(events.map((x) => [x.type, x.seq, (x.payload as { view: { kind: string } }).view.kind])).toEqual([['posting.created', 2, { Frozen: 'freeze', Unfrozen: 'unfreeze', Closed: 'close' }[e.type]]]);
    }
  });

  it('Debited: the posting, then the new transfer as GET shows it (debited, nothing refunded)', () => {
    const { after, events } = project(funded, { type: 'Debited', transferId: tr(2), amount: 400n });
    expect(events).toEqual([
      of(after, { payload: { of: 'view', view: { accountId: ACC, seq: 3, kind: 'debit', amount: '-400', balanceAfter: '600', heldAfter: '0', transferId: tr(2), holdId: null, currency: 'EUR', createdAt: AT } } }),
      of(after, {
        type: 'transfer.debited',
        payload: { of: 'view', view: {
          id: tr(2), kind: 'transfer', sourceAccountId: ACC, destinationAccountId: DST, amount: '400', currency: 'EUR', state: 'debited', refusalCode: null,
          metadata: { memo: 'm' }, holdId: null, refundOf: null, refunded: '0', createdAt: AT, updatedAt: AT,
        } },
      }),
    ]);
  });

  it('RefundDebited: the posting and the refund transfer; the claim on the original is no event', () => {
    const { events } = project(funded, { type: 'RefundDebited', transferId: tr(3), originalId: tr(9), amount: 50n });
    expect(events.map((x) => x.type)).toEqual(['posting.created', 'transfer.debited']);
    expect(events[1]!.payload).toMatchObject({ of: 'view', view: { id: tr(3), kind: 'refund', refundOf: tr(9), state: 'debited' } });
  });

  it('Credited, CreditRefused, Returned in the region: the posting, then the transfer row as the commit leaves it', () => {
    const credited = project(opened, { type: 'Credited', transferId: tr(4), amount: 10n });
    expect(credited.events).toEqual([
      of(credited.after, { payload: expect.objectContaining({ of: 'view' }) }),
      of(credited.after, { type: 'transfer.settled', payload: { of: 'transfer', id: tr(4) } }),
    ]);
    // A refusal posts nothing: its event carries the account's last seq.
    const refused = project(funded, { type: 'CreditRefused', transferId: tr(4), reason: 'account_closed' });
    expect(refused.events).toEqual([of(funded, { type: 'transfer.refused', seq: 2, payload: { of: 'transfer', id: tr(4) } })]);
    const returned = project(opened, { type: 'Returned', transferId: tr(4), amount: 10n });
    expect(returned.events.map((x) => [x.type, x.payload.of])).toEqual([['posting.created', 'view'], ['transfer.returned', 'transfer']]);
  });

  it('SentToSuspense: a closed account\'s return goes on to suspense, a debit and a transfer of kind suspense', () => {
    const closed = evolve(evolve(opened, { type: 'Closed' }), { type: 'Returned', transferId: tr(4), amount: 10n });
    const { events } = project(closed, { type: 'SentToSuspense', transferId: tr(8), returnedId: tr(4), destinationId: `sus_eu_EUR_${'2'.repeat(32)}` as AccountId, amount: 10n });
    expect(events.map((x) => [x.type, x.seq])).toEqual([['posting.created', 4], ['transfer.debited', 4]]);
    expect(events[1]!.payload).toMatchObject({ view: { id: tr(8), kind: 'suspense', amount: '10', metadata: { reason: 'account_closed', returnedTransferId: tr(4) } } });
  });

  it('a leg of another region\'s transfer: the credit is its posting; the inbound leg itself is no event', () => {
    const us = `tr_us_${'4'.repeat(32)}` as TransferId;
    expect(project(opened, { type: 'Credited', transferId: us, amount: 10n }).events.map((x) => x.type)).toEqual(['posting.created']);
    expect(project(opened, { type: 'CreditRefused', transferId: us, reason: 'account_closed' }).events).toEqual([]);
  });

  it('Settled: the source region\'s transfer row settles, at the account\'s last seq', () => {
    const { events } = project(funded, { type: 'Settled', transferId: tr(5) });
    expect(events).toEqual([of(funded, { type: 'transfer.settled', payload: { of: 'transfer', id: tr(5) } })]);
  });

  it('HoldPlaced: the posting (held moves) and the hold as GET shows it (held, nothing captured)', () => {
    const { after, events } = project(funded, { type: 'HoldPlaced', holdId: hold(1), destinationId: DST, amount: 300n, multiCapture: true, expiresAt: '2025-02-01T00:00:00Z' },
      source({ hold: { tenantId: TENANT, metadata: { h: 1 } } }));
    expect(events[0]!.payload).toMatchObject({ view: { kind: 'hold', amount: '0', heldAfter: '300', holdId: hold(1) } });
    expect(events[1]).toEqual(of(after, {
      type: 'hold.authorized',
      payload: { of: 'view', view: {
        id: hold(1), sourceAccountId: ACC, destinationAccountId: DST, amount: '300', captured: '0', remaining: '300', currency: 'EUR',
        multiCapture: true, state: 'held', expiresAt: '2025-02-01T00:00:00.000Z', metadata: { h: 1 }, createdAt: AT, updatedAt: AT,
      } },
    }));
  });

  it('HoldCaptured: the posting, the hold as this capture leaves it (held while something remains), then the capture transfer', () => {
    const part = project(withHold, { type: 'HoldCaptured', holdId: hold(1), transferId: tr(5), destinationId: DST, amount: 100n, released: 0n });
    expect(part.events.map((x) => x.type)).toEqual(['posting.created', 'hold.captured', 'transfer.debited']);
    expect(part.events[1]!.payload).toEqual({ of: 'hold', id: hold(1), captured: 100n, state: 'held' });
    expect(part.events[2]!.payload).toMatchObject({ of: 'view', view: { id: tr(5), kind: 'capture', holdId: hold(1), amount: '100', state: 'debited' } });
    const rest = project(part.after, { type: 'HoldCaptured', holdId: hold(1), transferId: tr(6), destinationId: DST, amount: 200n, released: 0n });
    expect(rest.events[1]!.payload).toEqual({ of: 'hold', id: hold(1), captured: 300n, state: 'captured' });
  });

  it('HoldReleased: the posting and hold.voided or hold.expired by its reason', () => {
    for (const reason of ['voided', 'expired'] as const) {
      const { events } = project(withHold, { type: 'HoldReleased', holdId: hold(1), amount: 300n, reason });
      expect(events.map((x) => x.type)).toEqual(['posting.created', `hold.${reason}`]);
      expect(events[1]!.payload).toEqual({ of: 'hold', id: hold(1), captured: 0n, state: reason });
    }
  });

  it('the ledger\'s own accounts are shown to no tenant: external, and suspense (its tenant\'s, but paid out by the admin)', () => {
    const ext = evolve(undefined, { ...OPENED, id: 'ext_eu_EUR' as AccountId, kind: 'external', tenantId: null });
    const sus = evolve(undefined, { ...OPENED, id: `sus_eu_EUR_${'2'.repeat(32)}` as AccountId, kind: 'suspense' });
    for (const state of [ext, sus]) {
      const { events } = project(state, { type: 'Debited', transferId: tr(7), amount: 1n }, source({ accountId: state.id }));
      expect(events.map((x) => [x.accountId, x.tenantId])).toEqual([[state.id, null], [state.id, null]]);
    }
  });

  it('a commit keeps every event in order, also where its hold row is written once', () => {
    const rows = emptyRows();
    const a = project(withHold, { type: 'HoldCaptured', holdId: hold(1), transferId: tr(5), destinationId: DST, amount: 100n, released: 0n });
    const b = project(a.after, { type: 'HoldCaptured', holdId: hold(1), transferId: tr(6), destinationId: DST, amount: 200n, released: 0n });
    addRows(rows, { ...a.rows, events: a.events });
    addRows(rows, { ...b.rows, events: b.events });
    expect(rows.holdUpdates).toHaveLength(1);
    expect(rows.events.map((x) => [x.type, x.seq])).toEqual([
      ['posting.created', 4], ['hold.captured', 4], ['transfer.debited', 4], ['posting.created', 5], ['hold.captured', 5], ['transfer.debited', 5],
    ]);
    expect(rows.events.filter((x) => x.payload.of === 'hold').map((x) => x.payload)).toEqual([
      { of: 'hold', id: hold(1), captured: 100n, state: 'held' }, { of: 'hold', id: hold(1), captured: 300n, state: 'captured' },
    ]);
  });
});

describe('addRows', () => {
  it('keeps one update per hold, the last, in the place of the first', () => {
    const rows = emptyRows();
    addRows(rows, { holdUpdate: { id: hold(1), captured: 1n, state: 'held', at: AT } });
    addRows(rows, { holdUpdate: { id: hold(2), captured: 0n, state: 'voided', at: AT } });
    addRows(rows, { holdUpdate: { id: hold(1), captured: 3n, state: 'captured', at: AT } });
    expect(rows.holdUpdates.map((u) => [u.id, u.captured])).toEqual([[hold(1), 3n], [hold(2), 0n]]);
    expect(rowCount(rows)).toBe(2);
  });
});

/** Recovery's view of the rows a history wrote (after `holds` existed): the account row and each hold row as it ends. */
function storedOf(rows: WriteRows, earlier: ReadonlyMap<string, StoredHold> = new Map()): { account: StoredAccount | undefined; holds: Map<string, StoredHold> } {
  const a = rows.accounts[0];
  const account = a && { kind: a.kind, tenantId: a.tenantId, currency: a.currency, region: a.region, overdraftLimit: a.overdraftLimit, metadata: a.metadata, at: a.at };
  const holds = new Map(earlier);
  for (const h of rows.newHolds) holds.set(h.id, { destinationId: h.destinationId, multiCapture: h.multiCapture, expiresAt: h.expiresAt, state: 'held' });
  for (const u of rows.holdUpdates) holds.set(u.id, { ...holds.get(u.id)!, state: u.state });
  return { account, holds };
}

describe('projecting, then reading back', () => {
  it('replays every kind of posting to the same state', () => {
    const history: AccountEvent[] = [
      OPENED,
      { type: 'Credited', transferId: tr(1), amount: 1000n },
      { type: 'Frozen' },
      { type: 'Unfrozen' },
      { type: 'Debited', transferId: tr(2), amount: 100n },
      { type: 'CreditRefused', transferId: tr(3), reason: 'currency_mismatch' },
      { type: 'Returned', transferId: tr(4), amount: 25n },
      { type: 'RefundDebited', transferId: tr(5), originalId: tr(1), amount: 5n },
      { type: 'HoldPlaced', holdId: hold(1), destinationId: DST, amount: 300n, multiCapture: false, expiresAt: '2025-02-01T00:00:00.000Z' },
      { type: 'HoldCaptured', holdId: hold(1), transferId: tr(6), destinationId: DST, amount: 120n, released: 180n },
      { type: 'HoldPlaced', holdId: hold(2), destinationId: DST, amount: 50n, multiCapture: true, expiresAt: '2025-02-01T00:00:00.000Z' },
      { type: 'HoldReleased', holdId: hold(2), amount: 50n, reason: 'voided' },
      { type: 'HoldPlaced', holdId: hold(3), destinationId: DST, amount: 70n, multiCapture: true, expiresAt: '2025-01-02T00:00:00.000Z' },
      { type: 'HoldCaptured', holdId: hold(3), transferId: tr(7), destinationId: DST, amount: 20n, released: 0n },
      { type: 'HoldReleased', holdId: hold(3), amount: 50n, reason: 'expired' },
    ];
    const rows = emptyRows();
    const states: AccountState[] = [];
    let live: AccountState | undefined;
    for (const e of history) {
      const step = project(live, e);
      addRows(rows, step.rows);
      live = step.after;
      if (step.rows.journal) states.push(live);
    }
    const { account, holds } = storedOf(rows);
    let replayed: AccountState | undefined;
    rows.journal.forEach((r: JournalRow, i) => {
      replayed = evolve(replayed, eventOfRow(r, account, holds));
      expect({ seq: replayed.seq, balance: replayed.balance, held: replayed.held }).toEqual({ seq: r.seq, balance: r.balanceAfter, held: r.heldAfter });
      expect(replayed).toEqual(states[i]);
    });
    expect(rows.journal).toHaveLength(history.length - 1); // the refusal posts nothing
    expect(replayed).toEqual(live);
  });

  it('reads back each posting as the event that wrote it (a refund debit as a debit)', () => {
    const cases: [AccountState | undefined, AccountEvent, AccountEvent?][] = [
      [undefined, OPENED],
      [funded, { type: 'Debited', transferId: tr(2), amount: 400n }],
      [funded, { type: 'RefundDebited', transferId: tr(3), originalId: tr(9), amount: 50n }, { type: 'Debited', transferId: tr(3), amount: 50n }],
      [opened, { type: 'Credited', transferId: tr(4), amount: 10n }],
      [opened, { type: 'Returned', transferId: tr(4), amount: 10n }],
      [withHold, { type: 'HoldCaptured', holdId: hold(1), transferId: tr(5), destinationId: DST, amount: 100n, released: 0n }],
      [withHold, { type: 'HoldReleased', holdId: hold(1), amount: 300n, reason: 'voided' }],
    ];
    for (const [before, e, readBack] of cases) {
      const { rows } = project(before, e);
      const all = emptyRows();
      addRows(all, rows);
      // hold(1) was placed before (withHold): its row is there already.
      const stored = storedOf(all, new Map([[hold(1), { destinationId: DST, multiCapture: true, expiresAt: '2025-02-01T00:00:00.000Z', state: 'held' }]]));
      expect(eventOfRow(rows.journal!, stored.account, stored.holds)).toEqual(readBack ?? e);
    }
  });

  it('a posting whose hold or account row is missing is refused loudly', () => {
    const { rows } = project(withHold, { type: 'HoldReleased', holdId: hold(1), amount: 300n, reason: 'voided' });
    expect(() => eventOfRow(rows.journal!, undefined, new Map())).toThrow(/hold .* missing at seq 4/);
    expect(() => eventOfRow(project(undefined, OPENED).rows.journal!, undefined, new Map())).toThrow('account row missing');
  });
});
