// The batch API: 1,000 transfers from 10 sources in a few dozen transactions; a result per
// item; linked groups all-or-nothing across actors (a failing item leaves no effect); replay
// under the same key; and a decided group completed by the expiry sweeper after its
// coordinator vanished.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { waitFor } from './helpers/cluster.ts';
import { decideGroup } from '../src/persistence/queries.ts';
import type { AccountId, HoldId, TenantId } from '../src/domain/ids.ts';
import { makeHoldId, regionOf } from '../src/domain/ids.ts';

let t: TestNode;
let key: string;
let tenantId: string;
let now = Date.parse('2026-03-01T00:00:00Z');

beforeAll(async () => {
  t = await startTestNode('batch', { relayIntervalMs: 600_000 }, undefined, () => now);
  ({ key, id: tenantId } = await t.tenant());
});
afterAll(async () => { await t?.close(); });

const balance = async (id: string) => (await t.call('GET', `/v1/accounts/${id}`, { key })).body.balance as string;
const batch = (items: unknown[], k = idem()) => t.call('POST', '/v1/transfers/batch', { key, idem: k, body: { items } });

describe('batch transfers', () => {
  it('1,000 transfers from 10 source accounts commit in a few dozen transactions', async () => {
    const sources = await Promise.all(Array.from({ length: 10 }, () => t.account(key)));
    const dests = await Promise.all(Array.from({ length: 20 }, () => t.account(key)));
    for (const s of sources) await t.deposit(key, s, '100000');
    const items = Array.from({ length: 1000 }, (_, i) => ({
      sourceAccountId: sources[i % 10], destinationAccountId: dests[i % 20], amount: '7', currency: 'USD',
    }));
    const before = t.node.writer.statements;
    const r = await batch(items);
    const statements = t.node.writer.statements - before;
    expect(r.status).toBe(200);
    expect(r.body.items).toHaveLength(1000);
    expect(r.body.items.every((x: { status: number }) => x.status === 201 || x.status === 202)).toBe(true);
    console.log(`batch of 1000: ${statements} commit transactions (debits and credits)`);
    expect(statements).toBeLessThanOrEqual(60);
    for (const s of sources) expect(await balance(s)).toBe(String(100000 - 100 * 7));
    await t.node.relay.runOnce(0);
    for (const d of dests) expect(await balance(d)).toBe(String(50 * 7));
  });

  it('answers per item; a replay with the same key answers the same and applies nothing again', async () => {
    const [a, b] = [await t.account(key), await t.account(key)];
    await t.deposit(key, a, '100');
    const items = [
      { sourceAccountId: a, destinationAccountId: b, amount: '60', currency: 'USD' },
      { sourceAccountId: a, destinationAccountId: b, amount: '60', currency: 'USD' },
      { sourceAccountId: a, destinationAccountId: b, amount: '1', currency: 'EUR' },
    ];
    const k = idem();
    const r = await batch(items, k);
    expect(r.body.items.map((x: { status: number }) => x.status).sort()).toEqual([201, 422, 422]);
    const again = await batch(items, k);
    expect(again.body.items.map((x: { status: number }) => x.status)).toEqual(r.body.items.map((x: { status: number }) => x.status));
    expect(await balance(a)).toBe('40');
    const reused = await batch([items[0]], k);
    expect(reused.status).toBe(422);
    expect(reused.body.code).toBe('idempotency_key_reused');
  });

  it('a linked group with one failing item leaves no effect at all', async () => {
    const [a, b, c, d] = await Promise.all([t.account(key), t.account(key), t.account(key), t.account(key)]);
    await t.deposit(key, a, '100');
    await t.deposit(key, b, '100');
    const journalBefore = (await t.node.pool.query('SELECT count(*) AS n FROM journal WHERE account_id = ANY($1) AND amount <> 0', [[a, b, c, d]])).rows[0];
    const r = await batch([
      { sourceAccountId: a, destinationAccountId: c, amount: '50', currency: 'USD', linked: 'g' },
      { sourceAccountId: b, destinationAccountId: d, amount: '500', currency: 'USD', linked: 'g' }, // cannot be funded
      { sourceAccountId: a, destinationAccountId: d, amount: '10', currency: 'USD' }, // independent
    ]);
    expect(r.body.items[0]).toMatchObject({ status: 422, error: { code: 'linked_group_failed' } });
    expect(r.body.items[1]).toMatchObject({ status: 422, error: { code: 'insufficient_funds' } });
    expect(r.body.items[2].status).toBe(201);
    await t.node.relay.runOnce(0);
    expect(await balance(a)).toBe('90');
    expect(await balance(b)).toBe('100');
    expect(await balance(c)).toBe('0');
    expect(await balance(d)).toBe('10');
    const acc = await t.call('GET', `/v1/accounts/${a}`, { key });
    expect(acc.body.held).toBe('0');
    const moved = (await t.node.pool.query('SELECT count(*) AS n FROM journal WHERE account_id = ANY($1) AND amount <> 0', [[a, b, c, d]])).rows[0];
    expect(BigInt(moved.n) - BigInt(journalBefore.n)).toBe(2n); // only the independent item's two legs
    const holds = await t.node.pool.query<{ state: string }>('SELECT state FROM holds WHERE source_id = ANY($1)', [[a, b]]);
    expect(holds.rows.map((h) => h.state)).toEqual(['voided']);
  });

  it('a linked group across actors applies all of its items', async () => {
    const [a, b, c] = await Promise.all([t.account(key), t.account(key), t.account(key)]);
    await t.deposit(key, a, '100');
    await t.deposit(key, b, '100');
    const r = await batch([
      { sourceAccountId: a, destinationAccountId: c, amount: '30', currency: 'USD', linked: 'pay' },
      { sourceAccountId: b, destinationAccountId: c, amount: '40', currency: 'USD', linked: 'pay' },
    ]);
    expect(r.body.items.map((x: { status: number; transfer: { kind: string } }) => [x.status, x.transfer.kind])).toEqual([[201, 'capture'], [201, 'capture']]);
    expect([await balance(a), await balance(b), await balance(c)]).toEqual(['70', '60', '70']);
  });

  it('a decided group whose coordinator vanished is completed by the sweeper, an undecided one released', async () => {
    const [a, b, c] = await Promise.all([t.account(key), t.account(key), t.account(key)]);
    await t.deposit(key, a, '100');
    await t.deposit(key, b, '100');
    const expiresAt = new Date(now + 60_000).toISOString();
    const place = (src: string, holdId: string, groupId: string) => t.node.registry.send(src as AccountId, {
      cmd: { type: 'Authorize', holdId: holdId as HoldId, destinationId: c as AccountId, amount: 25n, currency: 'USD', multiCapture: false, expiresAt },
      hold: { tenantId: tenantId as TenantId, metadata: null, groupId },
    });
    const hex = (n: number) => n.toString(16).padStart(32, '0');
    const [h1, h2] = [makeHoldId(regionOf(a as AccountId), hex(1)), makeHoldId(regionOf(b as AccountId), hex(2))];
    await place(a, h1, 'grp_committed');
    await place(b, h2, 'grp_undecided');
    expect(await decideGroup(t.node.pool, 'grp_committed', 'commit')).toBe('commit');
    now += 120_000;
    await t.node.relay.expireHolds();
    await t.node.relay.runOnce(0);
    // The capture's credit leg is asynchronous (the saga's, or the relay's when the row was busy):
    // a read of c may come before it commits. It lands, once.
    const balances = await waitFor('the capture credited c', 10_000, async () => {
      const seen = [await balance(a), await balance(b), await balance(c)];
      return seen[2] === '0' ? undefined : seen;
    });
    expect(balances).toEqual(['75', '100', '25']);
    const states = await t.node.pool.query<{ id: string; state: string }>('SELECT id, state FROM holds WHERE id = ANY($1) ORDER BY id', [[h1, h2]]);
    expect(states.rows.map((s) => s.state)).toEqual(['captured', 'expired']);
    // The coordinator, back, can no longer commit the group the sweeper aborted.
    expect(await decideGroup(t.node.pool, 'grp_undecided', 'commit')).toBe('abort');
  });
});
