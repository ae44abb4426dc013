// Holds and refunds through the API against the real actors and PostgreSQL: reservation,
// full, partial and multiple captures, void, expiry on a controllable clock (also across a
// restart), 100 concurrent captures of one hold, 100 concurrent partial refunds of one transfer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

let t: TestNode;
let key: string;
let now = Date.parse('2026-01-01T00:00:00Z');
const clock = () => now;

beforeAll(async () => {
  t = await startTestNode('holds', { relayIntervalMs: 600_000 }, undefined, clock);
  key = (await t.tenant()).key;
});
afterAll(async () => { await t?.close(); });

const get = async (id: string) => (await t.call('GET', `/v1/accounts/${id}`, { key })).body;
const hold = (src: string, dst: string, amount: string, extra: Record<string, unknown> = {}) =>
  t.call('POST', '/v1/holds', { key, idem: idem(), body: { sourceAccountId: src, destinationAccountId: dst, amount, currency: 'USD', ...extra } });
const capture = (id: string, amount?: string) => t.call('POST', `/v1/holds/${id}/capture`, { key, idem: idem(), body: amount ? { amount } : {} });

async function funded(amount: string): Promise<[string, string]> {
  const a = await t.account(key);
  const b = await t.account(key);
  await t.deposit(key, a, amount);
  return [a, b];
}

describe('holds', () => {
  it('reserves funds: available drops, balance does not; a second hold beyond available is refused', async () => {
    const [a, b] = await funded('1000');
    const h = await hold(a, b, '700');
    expect(h.status).toBe(201);
    expect(h.body).toMatchObject({ state: 'held', amount: '700', remaining: '700', captured: '0' });
    expect(await get(a)).toMatchObject({ balance: '1000', held: '700', available: '300' });
    const over = await hold(a, b, '301');
    expect(over.body.code).toBe('insufficient_funds');
    const w = await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: a, amount: '301', currency: 'USD' } });
    expect(w.body.code).toBe('insufficient_funds');
    expect((await t.call('POST', `/v1/accounts/${a}/close`, { key })).body.code).toBe('balance_not_zero');
  });

  it('a single-capture hold captured in part sends that part and releases the rest', async () => {
    const [a, b] = await funded('1000');
    const h = await hold(a, b, '600');
    const c = await capture(h.body.id, '250');
    expect(c.status).toBe(201);
    expect(c.body).toMatchObject({ kind: 'capture', amount: '250', state: 'settled', holdId: h.body.id });
    expect(await get(a)).toMatchObject({ balance: '750', held: '0', available: '750' });
    expect(await get(b)).toMatchObject({ balance: '250' });
    expect((await t.call('GET', `/v1/holds/${h.body.id}`, { key })).body).toMatchObject({ state: 'captured', captured: '250', remaining: '0' });
    expect((await capture(h.body.id, '1')).body.code).toBe('hold_not_active');
  });

  it('a multi-capture hold is captured in parts until used up; more than remaining is refused', async () => {
    const [a, b] = await funded('1000');
    const h = await hold(a, b, '500', { multiCapture: true });
    expect((await capture(h.body.id, '200')).status).toBe(201);
    expect((await capture(h.body.id, '301')).body.code).toBe('capture_exceeds_hold');
    expect((await t.call('GET', `/v1/holds/${h.body.id}`, { key })).body).toMatchObject({ state: 'held', captured: '200', remaining: '300' });
    const rest = await capture(h.body.id);
    expect(rest.body).toMatchObject({ amount: '300', state: 'settled' });
    expect(await get(a)).toMatchObject({ balance: '500', held: '0' });
    expect(await get(b)).toMatchObject({ balance: '500' });
  });

  it('void releases the reservation', async () => {
    const [a, b] = await funded('100');
    const h = await hold(a, b, '100');
    const v = await t.call('POST', `/v1/holds/${h.body.id}/void`, { key });
    expect(v.status).toBe(200);
    expect(v.body.state).toBe('voided');
    expect(await get(a)).toMatchObject({ balance: '100', held: '0', available: '100' });
    expect((await capture(h.body.id)).body.code).toBe('hold_not_active');
  });

  it('100 concurrent captures of one single-capture hold capture it once', async () => {
    const [a, b] = await funded('1000');
    const h = await hold(a, b, '400');
    const rs = await Promise.all(Array.from({ length: 100 }, () => capture(h.body.id)));
    expect(rs.filter((r) => r.status === 201 || r.status === 202)).toHaveLength(1);
    for (const r of rs.filter((x) => x.status >= 400)) expect(r.body.code).toBe('hold_not_active');
    expect(await get(a)).toMatchObject({ balance: '600', held: '0' });
    expect(await get(b)).toMatchObject({ balance: '400' });
    const { rows } = await t.node.pool.query<{ n: bigint }>("SELECT count(*) AS n FROM transfers WHERE hold_id = $1", [h.body.id]);
    expect(rows[0]!.n).toBe(1n);
  });

  it('expires at its deadline, also across a restart: expired holds are released, others stay capturable', async () => {
    const [a, b] = await funded('1000');
    const short = await hold(a, b, '100', { expiresInSeconds: 60 });
    const long = await hold(a, b, '200', { expiresInSeconds: 3600 });
    expect(await get(a)).toMatchObject({ held: '300' });
    now += 120_000; // past the first deadline, not the second
    // A capture past the deadline is refused even before the sweeper has run.
    expect((await capture(short.body.id)).body.code).toBe('hold_expired');
    await t.restart();
    await t.node.relay.expireHolds();
    expect((await t.call('GET', `/v1/holds/${short.body.id}`, { key })).body.state).toBe('expired');
    expect(await get(a)).toMatchObject({ balance: '1000', held: '200' });
    const c = await capture(long.body.id);
    expect(c.body).toMatchObject({ state: 'settled', amount: '200' });
    expect(await get(a)).toMatchObject({ balance: '800', held: '0' });
    const kinds = await t.node.pool.query<{ kind: string }>('SELECT kind FROM journal WHERE account_id = $1 ORDER BY seq', [a]);
    expect(kinds.rows.map((r) => r.kind)).toEqual(['open', 'credit', 'hold', 'hold', 'release', 'capture']);
  });
});

describe('refunds', () => {
  it('partial and multiple refunds up to the amount, never beyond', async () => {
    const [a, b] = await funded('1000');
    const tr = await t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: b, amount: '300', currency: 'USD' } });
    const r1 = await t.call('POST', `/v1/transfers/${tr.body.id}/refunds`, { key, idem: idem(), body: { amount: '100' } });
    expect(r1.status).toBe(201);
    expect(r1.body).toMatchObject({ kind: 'refund', refundOf: tr.body.id, amount: '100', sourceAccountId: b, destinationAccountId: a });
    const over = await t.call('POST', `/v1/transfers/${tr.body.id}/refunds`, { key, idem: idem(), body: { amount: '201' } });
    expect(over.body.code).toBe('refund_exceeds_transfer');
    const rest = await t.call('POST', `/v1/transfers/${tr.body.id}/refunds`, { key, idem: idem(), body: {} });
    expect(rest.body.amount).toBe('200');
    expect((await t.call('GET', `/v1/transfers/${tr.body.id}`, { key })).body.refunded).toBe('300');
    expect(await get(a)).toMatchObject({ balance: '1000' });
    expect(await get(b)).toMatchObject({ balance: '0' });
  });

  it('100 concurrent partial refunds of one transfer never refund more than its amount', async () => {
    const [a, b] = await funded('1000');
    const tr = await t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: b, amount: '50', currency: 'USD' } });
    await t.deposit(key, b, '10000'); // the destination has plenty: only the transfer's amount limits refunds
    const rs = await Promise.all(Array.from({ length: 100 }, () =>
      t.call('POST', `/v1/transfers/${tr.body.id}/refunds`, { key, idem: idem(), body: { amount: '1' } })));
    expect(rs.filter((r) => r.status === 201 || r.status === 202)).toHaveLength(50);
    for (const r of rs.filter((x) => x.status >= 400)) expect(r.body.code).toBe('refund_exceeds_transfer');
    const { rows } = await t.node.pool.query<{ n: bigint; s: bigint }>("SELECT count(*) AS n, sum(amount)::bigint AS s FROM transfers WHERE refund_of = $1", [tr.body.id]);
    expect(rows[0]).toEqual({ n: 50n, s: 50n });
    expect((await t.call('GET', `/v1/transfers/${tr.body.id}`, { key })).body.refunded).toBe('50');
  });

  it('a refund the destination cannot fund fails cleanly: 422, no money moved', async () => {
    const [a, b] = await funded('1000');
    const tr = await t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: b, amount: '300', currency: 'USD' } });
    await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: b, amount: '250', currency: 'USD' } });
    const before = await t.node.pool.query<{ n: bigint }>('SELECT count(*) AS n FROM journal');
    const r = await t.call('POST', `/v1/transfers/${tr.body.id}/refunds`, { key, idem: idem(), body: { amount: '100' } });
    expect(r.status).toBe(422);
    expect(r.body.code).toBe('insufficient_funds');
    const after = await t.node.pool.query<{ n: bigint }>('SELECT count(*) AS n FROM journal');
    expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
    expect((await t.call('GET', `/v1/transfers/${tr.body.id}`, { key })).body.refunded).toBe('0');
  });
});
