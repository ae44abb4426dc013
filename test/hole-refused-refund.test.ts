// Issue 9, point 10 (second half): a refund whose credit the original source refuses (here:
// closed) ends `returned`, its money back on the refund's source. Its claim on the original
// transfer is released in the same commit as that return, so `refunded` says what was really
// refunded and the transfer can be refunded again; concurrent refunds still never add up to
// more than the amount.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { randomBytes } from 'node:crypto';
import type { AccountId, TenantId, TransferId } from '../src/domain/ids.ts';
import { makeTransferId, regionOf, uuidv7Hex } from '../src/domain/ids.ts';

let t: TestNode;
let key: string;
let tenantId: string;

beforeAll(async () => {
  t = await startTestNode('hole_refused_refund', { relayIntervalMs: 600_000 });
  ({ key, id: tenantId } = await t.tenant('refused-refund'));
});
afterAll(async () => { await t?.close(); });

const balance = async (id: string) => (await t.call('GET', `/v1/accounts/${id}`, { key })).body.balance as string;
const getTransfer = async (id: string) => (await t.call('GET', `/v1/transfers/${id}`, { key })).body as { state: string; refunded: string; refusalCode: string | null };

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await t.node.relay.runOnce(0);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const refund = (transferId: string, amount?: string) =>
  t.call('POST', `/v1/transfers/${transferId}/refunds`, { key, idem: idem(), body: amount === undefined ? {} : { amount } });

/** A settled transfer a -> b of 50, after which a (the refunds' destination) is closed. */
async function settledToClosedSource(): Promise<{ a: string; b: string; original: string }> {
  const [a, b] = [await t.account(key), await t.account(key)];
  expect((await t.deposit(key, a, '50')).status).toBe(201);
  const tr = await t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: b, amount: '50', currency: 'USD' } });
  expect(tr.status).toBe(201);
  expect(tr.body.state).toBe('settled');
  expect((await t.call('POST', `/v1/accounts/${a}/close`, { key })).status).toBe(200);
  return { a, b, original: tr.body.id };
}

async function returnedRefund(id: string): Promise<{ state: string; refusalCode: string | null }> {
  return waitFor(`refund ${id} to return`, async () => {
    const r = await getTransfer(id);
    return r.state === 'returned' ? r : undefined;
  });
}

describe('a refund refused by the original source', () => {
  it('ends returned and gives its claim on the original back, so the transfer can be refunded again', async () => {
    const { a, b, original } = await settledToClosedSource();

    const first = await refund(original, '20');
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    expect(await returnedRefund(first.body.id)).toMatchObject({ state: 'returned', refusalCode: 'account_closed' });
    expect(await balance(b)).toBe('50');
    expect((await getTransfer(original)).refunded, 'a returned refund still claims part of the original').toBe('0');

    // The whole amount is refundable again: the edge and the actor both see 50 left.
    const whole = await refund(original);
    expect(whole.status, JSON.stringify(whole.body)).toBe(201);
    expect(whole.body).toMatchObject({ kind: 'refund', amount: '50', refundOf: original });
    await returnedRefund(whole.body.id);
    expect((await getTransfer(original)).refunded).toBe('0');
    expect(await balance(b)).toBe('50');
    expect(await balance(a)).toBe('0');

    // Across a restart nothing changes (the release is on the transfer row, not in memory).
    await t.restart();
    expect((await getTransfer(original)).refunded).toBe('0');
    expect(await balance(b)).toBe('50');
  }, 60_000);

  it('while a refund is in flight its claim still counts: concurrent refunds never exceed the amount', async () => {
    const { a, b, original } = await settledToClosedSource();
    // b has the funds for both: only the claims can refuse one.
    expect((await t.deposit(key, b, '100')).status).toBe(201);
    // Two refunds of 30 into b's mailbox back to back (as two requests that both passed the
    // edge's check would): the one writer of the claims takes the first and refuses the second,
    // whose 30 is more than is left while the first is still in flight.
    const send = () => t.node.registry.send(b as AccountId, {
      cmd: { type: 'Refund', transferId: makeTransferId(regionOf(b as AccountId), uuidv7Hex(Date.now(), randomBytes(10))), originalId: original as TransferId, amount: 30n, currency: 'USD', refundable: 50n },
      transfer: { destinationId: a as AccountId, kind: 'refund', tenantId: tenantId as TenantId, metadata: null },
    });
    const both = await Promise.all([send(), send()]);
    const codes = both.map((r) => (r.type === 'done' ? (r.reply.ok ? 'ok' : r.reply.code) : r.type));
    expect(codes).toEqual(['ok', 'refund_exceeds_transfer']);
    const taken = (await t.node.pool.query<{ id: string }>('SELECT id FROM transfers WHERE refund_of = $1', [original])).rows;
    expect(taken).toHaveLength(1);
    await returnedRefund(taken[0]!.id);
    expect((await getTransfer(original)).refunded).toBe('0');
    expect(await balance(b)).toBe('150');
  }, 60_000);

  it('a refund that settles keeps its claim', async () => {
    const [a, b] = [await t.account(key), await t.account(key)];
    expect((await t.deposit(key, a, '50')).status).toBe(201);
    const tr = await t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: b, amount: '50', currency: 'USD' } });
    const r = await refund(tr.body.id, '20');
    expect(r.body.state).toBe('settled');
    expect((await getTransfer(tr.body.id)).refunded).toBe('20');
    const over = await refund(tr.body.id, '31');
    expect(over.body.code).toBe('refund_exceeds_transfer');
    expect([await balance(a), await balance(b)]).toEqual(['20', '30']);
  });
});
