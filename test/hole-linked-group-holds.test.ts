// Issue 9, point 4: the holds behind a linked batch group are the group's, not the client's.
// Their ids are visible (the statement shows them), but the public capture and void routes
// answer 409 hold_in_linked_group and move nothing; the group's decision alone completes
// them. An undecided group aborted by the sweeper then leaves no transfer at all, and a
// committed one is captured whole by the sweeper.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { decideGroup } from '../src/persistence/queries.ts';
import type { AccountId, HoldId, TenantId } from '../src/domain/ids.ts';
import { makeHoldId, regionOf } from '../src/domain/ids.ts';

let t: TestNode;
let key: string;
let tenantId: string;
let now = Date.parse('2026-04-01T00:00:00Z');

beforeAll(async () => {
  t = await startTestNode('hole_linked_group_holds', { relayIntervalMs: 600_000 }, undefined, () => now);
  ({ key, id: tenantId } = await t.tenant());
});
afterAll(async () => { await t?.close(); });

const account = async (id: string) => (await t.call('GET', `/v1/accounts/${id}`, { key })).body as { balance: string; held: string };
const hex = (n: number) => n.toString(16).padStart(32, '0');
/** A hold id homed, as every hold is, in its source account's region. */
const holdIdFrom = (src: string, n: number): string => makeHoldId(regionOf(src as AccountId), hex(n));

/** Places a group's hold the way the batch coordinator does (phase 1), leaving the decision to the test. */
async function placeGroupHold(src: string, dst: string, holdId: string, groupId: string, amount: bigint): Promise<void> {
  const r = await t.node.registry.send(src as AccountId, {
    cmd: { type: 'Authorize', holdId: holdId as HoldId, destinationId: dst as AccountId, amount, currency: 'USD', multiCapture: false, expiresAt: new Date(now + 60_000).toISOString() },
    hold: { tenantId: tenantId as TenantId, metadata: null, groupId },
  });
  expect(r.type === 'done' && r.reply.ok, `hold ${holdId} placed`).toBe(true);
}

const transfersOf = async (holdIds: string[]) =>
  (await t.node.pool.query<{ id: string; hold_id: string }>('SELECT id, hold_id FROM transfers WHERE hold_id = ANY($1)', [holdIds])).rows;

describe('holds of a linked group through the public holds API', () => {
  it('an undecided group: capture and void answer 409 and move nothing; the sweeper aborts it and no transfer of it exists', async () => {
    const [a, b, c] = await Promise.all([t.account(key), t.account(key), t.account(key)]);
    await t.deposit(key, a, '100');
    await t.deposit(key, b, '100');
    const [h1, h2] = [holdIdFrom(a, 0x41), holdIdFrom(b, 0x42)];
    await placeGroupHold(a, c, h1, 'grp_undecided_hole4', 30n);
    await placeGroupHold(b, c, h2, 'grp_undecided_hole4', 40n);

    // The statement shows the hold id to the tenant: that is how a client learns it.
    const stmt = await t.call('GET', `/v1/accounts/${a}/statement`, { key });
    expect(stmt.body.data.map((p: { holdId: string | null }) => p.holdId)).toContain(h1);
    // GET still shows the hold.
    const shown = await t.call('GET', `/v1/holds/${h1}`, { key });
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ id: h1, state: 'held', remaining: '30' });

    const capture = await t.call('POST', `/v1/holds/${h1}/capture`, { key, idem: idem(), body: {} });
    expect(capture.status, `capture of a group hold: ${JSON.stringify(capture.body)}`).toBe(409);
    expect(capture.body.code).toBe('hold_in_linked_group');
    const voided = await t.call('POST', `/v1/holds/${h2}/void`, { key, idem: idem() });
    expect(voided.status, `void of a group hold: ${JSON.stringify(voided.body)}`).toBe(409);
    expect(voided.body.code).toBe('hold_in_linked_group');

    // Nothing moved: no transfer, the holds still reserve their amounts.
    expect(await transfersOf([h1, h2])).toEqual([]);
    expect(await account(a)).toMatchObject({ balance: '100', held: '30' });
    expect(await account(b)).toMatchObject({ balance: '100', held: '40' });

    // The coordinator never decided: at the deadline the sweeper aborts the group.
    now += 120_000;
    await t.node.relay.expireHolds();
    await t.node.relay.runOnce(0);
    expect(await decideGroup(t.node.pool, 'grp_undecided_hole4', 'commit')).toBe('abort');
    expect(await transfersOf([h1, h2])).toEqual([]);
    expect(await account(a)).toMatchObject({ balance: '100', held: '0' });
    expect(await account(b)).toMatchObject({ balance: '100', held: '0' });
    expect(await account(c)).toMatchObject({ balance: '0' });
    const states = await t.node.pool.query<{ state: string }>('SELECT state FROM holds WHERE id = ANY($1) ORDER BY id', [[h1, h2]]);
    expect(states.rows.map((s) => s.state)).toEqual(['expired', 'expired']);
  });

  it('a committed group: a direct void answers 409, and the sweeper captures every hold of the group', async () => {
    const [a, b, c] = await Promise.all([t.account(key), t.account(key), t.account(key)]);
    await t.deposit(key, a, '100');
    await t.deposit(key, b, '100');
    const [h1, h2] = [holdIdFrom(a, 0x51), holdIdFrom(b, 0x52)];
    await placeGroupHold(a, c, h1, 'grp_committed_hole4', 25n);
    await placeGroupHold(b, c, h2, 'grp_committed_hole4', 35n);
    // Decided, then the coordinator vanished before capturing.
    expect(await decideGroup(t.node.pool, 'grp_committed_hole4', 'commit')).toBe('commit');

    const voided = await t.call('POST', `/v1/holds/${h1}/void`, { key });
    expect(voided.status, `void of a committed group's hold: ${JSON.stringify(voided.body)}`).toBe(409);
    expect(voided.body.code).toBe('hold_in_linked_group');
    const partial = await t.call('POST', `/v1/holds/${h2}/capture`, { key, idem: idem(), body: { amount: '5' } });
    expect(partial.status, `partial capture of a committed group's hold: ${JSON.stringify(partial.body)}`).toBe(409);
    expect(partial.body.code).toBe('hold_in_linked_group');
    expect(await transfersOf([h1, h2])).toEqual([]);

    now += 120_000;
    await t.node.relay.expireHolds();
    await t.node.relay.runOnce(0);
    const moved = await transfersOf([h1, h2]);
    expect(moved.map((m) => m.hold_id).sort()).toEqual([h1, h2]);
    expect(await account(a)).toMatchObject({ balance: '75', held: '0' });
    expect(await account(b)).toMatchObject({ balance: '65', held: '0' });
    // The captures' credits are delivered after their commits (the saga, or the relay's pass):
    // on a loaded machine a first delivery can time out, and the next delivery lands it.
    for (let i = 0; i < 100 && (await account(c)).balance !== '60'; i++) {
      await t.node.relay.runOnce(0);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await account(c)).toMatchObject({ balance: '60' });
  });

  it('holds a client placed itself are still captured and voided as before', async () => {
    const [a, c] = await Promise.all([t.account(key), t.account(key)]);
    await t.deposit(key, a, '100');
    const place = () => t.call('POST', '/v1/holds', { key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: c, amount: '10', currency: 'USD' } });
    const [p1, p2] = [(await place()).body.id as string, (await place()).body.id as string];
    expect((await t.call('POST', `/v1/holds/${p1}/capture`, { key, idem: idem(), body: {} })).status).toBe(201);
    expect((await t.call('POST', `/v1/holds/${p2}/void`, { key })).status).toBe(200);
    expect(await account(a)).toMatchObject({ balance: '90', held: '0' });
  });
});
