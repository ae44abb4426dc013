// The transfer saga end to end: settle, refusal by a closed destination and the money's
// return, freeze blocking debits, the relay re-delivering a credit that never arrived, and
// statements paginated newest first.
import { newTrace } from '../src/observability/trace.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

let t: TestNode;
let key: string;

beforeAll(async () => {
  t = await startTestNode('saga');
  key = (await t.tenant()).key;
});
afterAll(async () => { await t?.close(); });

const transfer = (src: string, dst: string, amount: string) =>
  t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: src, destinationAccountId: dst, amount, currency: 'USD' } });

describe('transfer saga', () => {
  it('a closed destination refuses the credit and the money returns to the source', async () => {
    const a = await t.account(key);
    const b = await t.account(key);
    await t.deposit(key, a, '500');
    expect((await t.call('POST', `/v1/accounts/${b}/close`, { key })).body.status).toBe('closed');
    const r = await transfer(a, b, '200');
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ state: 'returned', refusalCode: 'account_closed' });
    expect((await t.call('GET', `/v1/accounts/${a}`, { key })).body.balance).toBe('500');
    expect((await t.call('GET', `/v1/accounts/${b}`, { key })).body.balance).toBe('0');
    const legs = await t.node.pool.query<{ account_id: string; kind: string; amount: bigint }>(
      'SELECT account_id, kind, amount FROM journal WHERE transfer_id = $1 ORDER BY seq', [r.body.id]);
    expect(legs.rows).toEqual([
      { account_id: a, kind: 'debit', amount: -200n },
      { account_id: a, kind: 'return', amount: 200n },
    ]);
    expect((await t.call('GET', `/v1/transfers/${r.body.id}`, { key })).body).toEqual(r.body);
  });

  it('a frozen account cannot pay but can be paid, and pays again once unfrozen', async () => {
    const a = await t.account(key);
    const b = await t.account(key);
    await t.deposit(key, a, '100');
    await t.call('POST', `/v1/accounts/${a}/freeze`, { key });
    const refused = await transfer(a, b, '10');
    expect(refused.status).toBe(422);
    expect(refused.body.code).toBe('account_frozen');
    expect((await transfer(b, a, '1')).body.code).toBe('insufficient_funds');
    expect((await t.deposit(key, a, '5')).status).toBe(201);
    await t.call('POST', `/v1/accounts/${a}/unfreeze`, { key });
    expect((await transfer(a, b, '10')).status).toBe(201);
    expect((await t.call('GET', `/v1/accounts/${a}`, { key })).body.balance).toBe('95');
  });

  it('the relay re-delivers a credit that never arrived, exactly once', async () => {
    const a = await t.account(key);
    const b = await t.account(key);
    await t.deposit(key, a, '100');
    const r = await transfer(a, b, '40');
    expect(r.body.state).toBe('settled');
    // Pretend the credit never happened: a second delivery must change nothing.
    const before = await t.node.pool.query('SELECT count(*) AS n FROM journal WHERE transfer_id = $1', [r.body.id]);
    const again = await t.node.registry.deliverCredit({ id: r.body.id, sourceId: a as never, destinationId: b as never, amount: 40n, currency: 'USD' }, true, newTrace());
    expect(again.type).toBe('done');
    const again2 = await t.node.registry.deliverCredit({ id: r.body.id, sourceId: a as never, destinationId: b as never, amount: 40n, currency: 'USD' }, false, newTrace());
    expect(again2.type).not.toBe('duplicate');
    const after = await t.node.pool.query('SELECT count(*) AS n FROM journal WHERE transfer_id = $1', [r.body.id]);
    expect(after.rows).toEqual(before.rows);
    expect((await t.call('GET', `/v1/accounts/${b}`, { key })).body.balance).toBe('40');
    // A credit that fails (the destination's write is refused for a while) leaves the
    // transfer debited: 202, money in flight; the relay settles it once writes succeed.
    const c = await t.account(key);
    await t.node.pool.query(`CREATE OR REPLACE FUNCTION geopay_test_block() RETURNS trigger AS $$
      BEGIN IF NEW.account_id = '${c}' AND NEW.kind = 'credit' THEN RAISE EXCEPTION 'blocked'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`);
    await t.node.pool.query('CREATE TRIGGER geopay_test_block BEFORE INSERT ON journal FOR EACH ROW EXECUTE FUNCTION geopay_test_block()');
    let stuck;
    try {
      stuck = await transfer(a, c, '15');
      expect(stuck.status).toBe(202);
      expect(stuck.body.state).toBe('debited');
      const flight = await t.node.pool.query<{ s: bigint }>("SELECT (SELECT sum(amount) FROM journal)::bigint + (SELECT coalesce(sum(amount), 0) FROM transfers WHERE state = 'debited')::bigint AS s");
      expect(flight.rows[0]!.s).toBe(0n);
    } finally {
      await t.node.pool.query('DROP TRIGGER geopay_test_block ON journal');
    }
    await t.node.relay.runOnce(0);
    expect((await t.call('GET', `/v1/transfers/${stuck.body.id}`, { key })).body.state).toBe('settled');
    expect((await t.call('GET', `/v1/accounts/${c}`, { key })).body.balance).toBe('15');
    await t.node.relay.runOnce(0);
    expect((await t.call('GET', `/v1/accounts/${c}`, { key })).body.balance).toBe('15');
  });

  it('statements come newest first, paginated by cursor', async () => {
    const a = await t.account(key);
    for (let i = 1; i <= 7; i++) await t.deposit(key, a, String(i));
    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const page: { status: number; body: { data: { seq: number; amount: string }[]; nextCursor: string | null } } =
        await t.call('GET', `/v1/accounts/${a}/statement?limit=3${cursor ? `&cursor=${cursor}` : ''}`, { key });
      expect(page.status).toBe(200);
      expect(page.body.data.length).toBeLessThanOrEqual(3);
      seen.push(...page.body.data.map((p) => p.seq));
      cursor = page.body.nextCursor;
    } while (cursor);
    expect(seen).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
  });
});
