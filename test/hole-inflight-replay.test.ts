// Issue 9, point 11: an honest replay is judged against the stored request of its key, never
// against another request that happens to be in flight under the same key. Key K answered 201
// for amount "1"; then K with amount "2" and K with amount "1" are sent at the same time: the
// "2" is refused as reused, the "1" gets the stored 201, byte for byte. Real PostgreSQL and actors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

const ROUNDS = 50;

let t: TestNode;
let key: string;

beforeAll(async () => {
  t = await startTestNode('hole_inflight_replay');
  key = (await t.tenant('racer')).key;
});
afterAll(async () => { await t?.close(); });

interface Raw { status: number; text: string; body: any }

async function post(url: string, idemKey: string, body: unknown): Promise<Raw> {
  const res = await t.node.app.inject({
    method: 'POST', url, payload: JSON.stringify(body),
    headers: { authorization: `Bearer ${key}`, 'idempotency-key': idemKey, 'content-type': 'application/json' },
  });
  let parsed: unknown;
  try { parsed = JSON.parse(res.body); } catch { parsed = undefined; }
  return { status: res.statusCode, text: res.body, body: parsed };
}

async function balance(id: string): Promise<string> {
  const r = await t.call('GET', `/v1/accounts/${id}`, { key });
  expect(r.status).toBe(200);
  return r.body.balance;
}

describe('a replay racing a conflicting request under its key', () => {
  it(`gets the stored answer, and the conflicting one 422 (${ROUNDS} rounds)`, async () => {
    const src = await t.account(key, 'USD');
    const dst = await t.account(key, 'USD');
    expect((await t.deposit(key, src, '100000')).status).toBe(201);
    const bodyOf = (amount: string) => ({ sourceAccountId: src, destinationAccountId: dst, amount, currency: 'USD' });

    const wrong: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const k = idem();
      const first = await post('/v1/transfers', k, bodyOf('1'));
      expect(first.status, first.text).toBe(201);
      // The conflicting request first, so that it is the one in flight when the replay arrives.
      const [conflict, replay] = await Promise.all([post('/v1/transfers', k, bodyOf('2')), post('/v1/transfers', k, bodyOf('1'))]);
      if (replay.status !== 201 || replay.text !== first.text) wrong.push(`round ${round}: replay got ${replay.status} ${replay.text}`);
      if (conflict.status !== 422 || conflict.body?.code !== 'idempotency_key_reused') wrong.push(`round ${round}: conflict got ${conflict.status} ${conflict.text}`);
    }
    expect(wrong, `${wrong.length} wrong answers in ${ROUNDS} rounds, first: ${wrong.slice(0, 2).join('; ')}`).toEqual([]);
    // One transfer of "1" per round, nothing of "2".
    const { rows } = await t.node.pool.query<{ n: string; total: string }>('SELECT count(*)::text AS n, sum(amount)::text AS total FROM transfers WHERE source_id = $1', [src]);
    expect(rows[0]).toEqual({ n: String(ROUNDS), total: String(ROUNDS) });
    expect(await balance(src)).toBe(String(100000 - ROUNDS));
    expect(await balance(dst)).toBe(String(ROUNDS));
  }, 60_000);

  it('two different requests under a fresh key: one is applied, the other refused as reused', async () => {
    const src = await t.account(key, 'USD');
    const dst = await t.account(key, 'USD');
    expect((await t.deposit(key, src, '1000')).status).toBe(201);
    const k = idem();
    const all = await Promise.all(['3', '5', '3', '5'].map((amount) => post('/v1/transfers', k, { sourceAccountId: src, destinationAccountId: dst, amount, currency: 'USD' })));
    const ok = all.filter((r) => r.status === 201);
    const reused = all.filter((r) => r.status === 422 && r.body?.code === 'idempotency_key_reused');
    expect(ok.length + reused.length, all.map((r) => `${r.status} ${r.text}`).join('\n')).toBe(4);
    expect(new Set(ok.map((r) => r.body.amount)).size, 'one body applied').toBe(1);
    expect(ok.length).toBe(2);
    const applied = ok[0]!.body.amount as string;
    expect(await balance(src)).toBe(String(1000 - Number(applied)));
  });
});
