// Transfer and hold ids carry their home region, the source account's: the region whose
// database commits the debit and the row. Checked through the API on one node of region eu
// that opens accounts of eu and us, for every way money moves and for holds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccountId, HoldId, TransferId } from '../src/domain/ids.ts';
import { parseHoldId, parseTransferId, regionOf, regionOfHold, regionOfTransfer } from '../src/domain/ids.ts';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

let t: TestNode;
let key: string;
let eu: string;
let us: string;

beforeAll(async () => {
  t = await startTestNode('idregions', { region: 'eu' });
  key = (await t.tenant()).key;
  eu = await t.account(key);
  us = await t.account(key, 'USD', { region: 'us' });
});
afterAll(async () => { await t?.close(); });

const post = (url: string, body: unknown) => t.call('POST', url, { key, idem: idem(), body });

/** The region read off a transfer id the API answered; the id must also parse and read back. */
async function transferRegion(r: { status: number; body: { id: string; state?: string } }): Promise<string> {
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const id = parseTransferId(r.body.id);
  expect(id, r.body.id).toBeDefined();
  expect((await t.call('GET', `/v1/transfers/${id}`, { key })).body.id).toBe(id);
  return regionOfTransfer(id as TransferId);
}

describe('transfer and hold ids name their source account\'s region', () => {
  it('the accounts are of two regions, on this one node', () => {
    expect([regionOf(eu as AccountId), regionOf(us as AccountId)]).toEqual(['eu', 'us']);
  });

  it('a deposit is homed in the account\'s region (its source is that region\'s external account)', async () => {
    expect(await transferRegion(await t.deposit(key, us, '500'))).toBe('us');
    expect(await transferRegion(await t.deposit(key, eu, '500'))).toBe('eu');
  });

  it('a transfer in its source\'s region, its refund in the original destination\'s', async () => {
    const forth = await post('/v1/transfers', { sourceAccountId: eu, destinationAccountId: us, amount: '100', currency: 'USD' });
    expect(await transferRegion(forth)).toBe('eu');
    const back = await post(`/v1/transfers/${forth.body.id}/refunds`, { amount: '40' });
    expect(back.body).toMatchObject({ kind: 'refund', sourceAccountId: us, refundOf: forth.body.id });
    expect(await transferRegion(back)).toBe('us');
    const other = await post('/v1/transfers', { sourceAccountId: us, destinationAccountId: eu, amount: '10', currency: 'USD' });
    expect(await transferRegion(other)).toBe('us');
  });

  it('a withdrawal in the account\'s region', async () => {
    const out = await post('/v1/withdrawals', { accountId: us, amount: '5', currency: 'USD' });
    expect(out.body).toMatchObject({ kind: 'withdrawal', destinationAccountId: 'ext_us_USD' });
    expect(await transferRegion(out)).toBe('us');
  });

  it('a hold and its capture in the hold source\'s region', async () => {
    const h = await post('/v1/holds', { sourceAccountId: us, destinationAccountId: eu, amount: '30', currency: 'USD' });
    expect(h.status, JSON.stringify(h.body)).toBe(201);
    const holdId = parseHoldId(h.body.id);
    expect(holdId, h.body.id).toBeDefined();
    expect(regionOfHold(holdId as HoldId)).toBe('us');
    expect((await t.call('GET', `/v1/holds/${holdId}`, { key })).body.state).toBe('held');
    const captured = await post(`/v1/holds/${holdId}/capture`, {});
    expect(captured.body).toMatchObject({ kind: 'capture', holdId, sourceAccountId: us });
    expect(await transferRegion(captured)).toBe('us');
  });

  it('a linked batch group: each hold and each capture in its item source\'s region', async () => {
    const r = await t.call('POST', '/v1/transfers/batch', { key, idem: idem(), body: { items: [
      { sourceAccountId: eu, destinationAccountId: us, amount: '3', currency: 'USD', linked: 'g' },
      { sourceAccountId: us, destinationAccountId: eu, amount: '4', currency: 'USD', linked: 'g' },
    ] } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const items = r.body.items as { status: number; transfer: { id: string; kind: string; holdId: string } }[];
    expect(items.map((i) => [i.status, i.transfer.kind])).toEqual([[201, 'capture'], [201, 'capture']]);
    expect(items.map((i) => regionOfTransfer(parseTransferId(i.transfer.id)!))).toEqual(['eu', 'us']);
    expect(items.map((i) => regionOfHold(parseHoldId(i.transfer.holdId)!))).toEqual(['eu', 'us']);
  });

  it('an id of the old, region-less form is no transfer or hold at all', async () => {
    const hex = '0'.repeat(32);
    expect((await t.call('GET', `/v1/transfers/tr_${hex}`, { key })).body.code).toBe('transfer_not_found');
    expect((await t.call('GET', `/v1/holds/hold_${hex}`, { key })).body.code).toBe('hold_not_found');
  });
});
