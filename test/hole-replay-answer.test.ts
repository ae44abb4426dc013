// Issue 9, point 12: a replay answers the answer that was given (its status and its body, byte
// for byte, with `Idempotent-Replayed: true`), not the transfer as it is now: the current state
// is one GET away. Checked after the transfer moved on: a 202 whose credit landed since
// (TRANSFER_WAIT_MS=0), a 201 refunded since, and both again after a restart. Real PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { waitFor } from './helpers/cluster.ts';

let quick: TestNode;
let waiting: TestNode;

beforeAll(async () => {
  [quick, waiting] = await Promise.all([startTestNode('hole_replay_wait0', { transferWaitMs: 0 }), startTestNode('hole_replay_wait')]);
});
afterAll(async () => { await Promise.all([quick?.close(), waiting?.close()]); });

interface Raw { status: number; text: string; body: any; replayed: unknown }

async function post(t: TestNode, key: string, url: string, idemKey: string, body: unknown): Promise<Raw> {
  const res = await t.node.app.inject({
    method: 'POST', url, payload: JSON.stringify(body),
    headers: { authorization: `Bearer ${key}`, 'idempotency-key': idemKey, 'content-type': 'application/json' },
  });
  let parsed: unknown;
  try { parsed = JSON.parse(res.body); } catch { parsed = undefined; }
  return { status: res.statusCode, text: res.body, body: parsed, replayed: res.headers['idempotent-replayed'] };
}

function expectReplayOf(again: Raw, first: Raw): void {
  expect(again.status, again.text).toBe(first.status);
  expect(again.text, 'the replay is byte-identical to the first answer').toBe(first.text);
  expect(again.replayed, 'Idempotent-Replayed header').toBe('true');
}

/**
 * TRANSFER_WAIT_MS=0 answers without waiting for the credit, as the transfer stands then: on a
 * loaded machine the credit can commit before the answer is built (201 settled). These cases
 * need a 202 to replay, so a first answer of 201 is tried again, on fresh accounts.
 */
async function answered202<T extends { first: Raw }>(attempt: () => Promise<T>): Promise<T> {
  for (let i = 1; ; i++) {
    const r = await attempt();
    if (r.first.status !== 201 || i === 5) return r;
  }
}

async function settled(t: TestNode, key: string, id: string): Promise<any> {
  return waitFor(`transfer ${id} to settle`, 20_000, async () => {
    const r = await t.call('GET', `/v1/transfers/${id}`, { key });
    return r.body?.state === 'settled' ? r.body : undefined;
  });
}

describe('TRANSFER_WAIT_MS=0: answered 202 debited', () => {
  it('replays 202 debited after the credit landed, and again after a restart', async () => {
    const key = (await quick.tenant('quick')).key;
    const { src, k, body, first } = await answered202(async () => {
      const src = await quick.account(key, 'USD');
      const dst = await quick.account(key, 'USD');
      const dep = await quick.deposit(key, src, '1000');
      expect([201, 202]).toContain(dep.status);
      await settled(quick, key, dep.body.id);
      const k = idem();
      const body = { sourceAccountId: src, destinationAccountId: dst, amount: '40', currency: 'USD', metadata: { order: 'o-1', a: 1 } };
      return { src, k, body, first: await post(quick, key, '/v1/transfers', k, body) };
    });
    expect(first.status, first.text).toBe(202);
    expect(first.body.state).toBe('debited');
    expect(first.replayed, 'a first answer is not marked as a replay').toBeUndefined();
    const now = await settled(quick, key, first.body.id);
    expect(now.updatedAt).not.toBe(first.body.updatedAt);

    expectReplayOf(await post(quick, key, '/v1/transfers', k, body), first);
    await quick.restart();
    expectReplayOf(await post(quick, key, '/v1/transfers', k, body), first);
    // Replayed, not applied again; the current state is one GET away.
    const read = await quick.call('GET', `/v1/transfers/${first.body.id}`, { key });
    expect(read.body.state).toBe('settled');
    const { rows } = await quick.node.pool.query<{ n: string }>('SELECT count(*)::text AS n FROM transfers WHERE source_id = $1', [src]);
    expect(rows[0]!.n).toBe('1');
  });

  it('an answer lost before it was stored (a crash in between): the replay answers the transfer as it stands, never behind the first', async () => {
    const key = (await quick.tenant('quick-lost')).key;
    const { k, body, first } = await answered202(async () => {
      const k = idem();
      const body = { accountId: await quick.account(key, 'USD'), amount: '12', currency: 'USD' };
      return { k, body, first: await post(quick, key, '/v1/deposits', k, body) };
    });
    expect(first.status, first.text).toBe(202);
    await settled(quick, key, first.body.id);
    // The answer is stored just after it is given (batched): wait for it, so it cannot land after the wipe below.
    await waitFor('the first answer to be stored', 10_000, async () =>
      ((await quick.node.pool.query('SELECT 1 FROM idempotency_keys WHERE key = $1 AND status_code IS NOT NULL', [k])).rowCount ? true : undefined));
    // What a crash between answering and storing leaves: the key, without its answer.
    await quick.node.pool.query('UPDATE idempotency_keys SET status_code = NULL, response = NULL WHERE key = $1', [k]);
    await quick.restart();
    const again = await post(quick, key, '/v1/deposits', k, body);
    expect(again.status, again.text).toBe(201);
    expect(again.replayed).toBe('true');
    const { state, updatedAt, ...same } = again.body;
    const { state: firstState, updatedAt: firstUpdatedAt, ...firstSame } = first.body;
    expect([firstState, state]).toEqual(['debited', 'settled']);
    expect(same, 'the same transfer, parties and amount').toEqual(firstSame);
    expect(updatedAt >= firstUpdatedAt).toBe(true);
  });

  it('a deposit answered 202 replays 202', async () => {
    const key = (await quick.tenant('quick-deposit')).key;
    const { acc, k, first } = await answered202(async () => {
      const acc = await quick.account(key, 'USD');
      const k = idem();
      return { acc, k, first: await post(quick, key, '/v1/deposits', k, { accountId: acc, amount: '9', currency: 'USD' }) };
    });
    expect(first.status, first.text).toBe(202);
    await settled(quick, key, first.body.id);
    expectReplayOf(await post(quick, key, '/v1/deposits', k, { accountId: acc, amount: '9', currency: 'USD' }), first);
  });
});

describe('a refund in between', () => {
  it('a transfer answered with refunded "0" replays refunded "0" after a refund, and again after a restart', async () => {
    const key = (await waiting.tenant('refunds')).key;
    const src = await waiting.account(key, 'USD');
    const dst = await waiting.account(key, 'USD');
    expect((await waiting.deposit(key, src, '100')).status).toBe(201);
    const k = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '10', currency: 'USD' };
    const first = await post(waiting, key, '/v1/transfers', k, body);
    expect(first.status, first.text).toBe(201);
    expect(first.body).toMatchObject({ state: 'settled', refunded: '0' });

    const refund = await post(waiting, key, `/v1/transfers/${first.body.id}/refunds`, idem(), { amount: '3' });
    expect(refund.status, refund.text).toBe(201);
    expect((await waiting.call('GET', `/v1/transfers/${first.body.id}`, { key })).body.refunded).toBe('3');

    expectReplayOf(await post(waiting, key, '/v1/transfers', k, body), first);
    await waiting.restart();
    expectReplayOf(await post(waiting, key, '/v1/transfers', k, body), first);
    expect((await waiting.call('GET', `/v1/accounts/${dst}`, { key })).body.balance).toBe('7');
  });

  it('stored answers of other kinds carry the header too: a rejection, an account open', async () => {
    const key = (await waiting.tenant('others')).key;
    const poor = await waiting.account(key, 'USD');
    const dst = await waiting.account(key, 'USD');
    const k = idem();
    const body = { sourceAccountId: poor, destinationAccountId: dst, amount: '5', currency: 'USD' };
    const rejected = await post(waiting, key, '/v1/transfers', k, body);
    expect(rejected.status).toBe(422);
    expectReplayOf(await post(waiting, key, '/v1/transfers', k, body), rejected);

    const kOpen = idem();
    const open = await post(waiting, key, '/v1/accounts', kOpen, { currency: 'EUR' });
    expect(open.status).toBe(201);
    expectReplayOf(await post(waiting, key, '/v1/accounts', kOpen, { currency: 'EUR' }), open);
  });
});

describe('a batch', () => {
  it('replays every item as first answered, marked as a replay, after its transfers settled', async () => {
    const key = (await quick.tenant('batch')).key;
    const src = await quick.account(key, 'USD');
    const dst = await quick.account(key, 'USD');
    await settled(quick, key, (await quick.deposit(key, src, '1000')).body.id);
    const k = idem();
    const body = { items: [1, 2, 3].map((n) => ({ sourceAccountId: src, destinationAccountId: dst, amount: String(n), currency: 'USD' })) };
    const first = await post(quick, key, '/v1/transfers/batch', k, body);
    expect(first.status, first.text).toBe(200);
    expect(first.replayed, 'a first answer is not marked as a replay').toBeUndefined();
    // Each item answers as its transfer stood when the batch answered: 202 debited, or 201 if
    // its credit (same node) committed while later items were still being debited.
    for (const i of first.body.items) expect([201, 202], JSON.stringify(i)).toContain(i.status);
    for (const i of first.body.items) await settled(quick, key, i.transfer.id);
    const again = await post(quick, key, '/v1/transfers/batch', k, body);
    expectReplayOf(again, first);
  });
});
