// The row-locking baseline (ENGINE=baseline) through the same HTTP stack: accounts, deposits,
// withdrawals and transfers settle in one transaction each, a replayed key answers the same and
// moves money once, contention never overdraws, the journal sums to zero and balances equal
// their postings, and a tenant never sees another's accounts or transfers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

let t: TestNode;
let key: string;

beforeAll(async () => {
  t = await startTestNode('baseline', { engine: 'baseline' });
  key = (await t.tenant()).key;
});
afterAll(async () => { await t?.close(); });

async function one<T>(sql: string, params: unknown[] = []): Promise<T> {
  const { rows } = await t.node.pool.query(sql, params);
  return rows[0] as T;
}

const transfer = (src: string, dst: string, amount: string, k = idem(), extra: Record<string, unknown> = {}) =>
  t.call('POST', '/v1/transfers', { key, idem: k, body: { sourceAccountId: src, destinationAccountId: dst, amount, currency: 'USD', ...extra } });

/** t.deposit, with the headers kept (problem+json is checked). */
const deposit = (k: string, accountId: string, amount: string) =>
  t.call('POST', '/v1/deposits', { key: k, idem: idem(), body: { accountId, amount, currency: 'USD' } });

const balance = async (id: string): Promise<string> => (await t.call('GET', `/v1/accounts/${id}`, { key })).body.balance;

function expectProblem(r: { status: number; body: any; headers: Record<string, unknown> }, status: number, code: string): void {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(String(r.headers['content-type'])).toMatch(/^application\/problem\+json/);
  expect(r.body).toMatchObject({ status, code });
}

describe('baseline engine', () => {
  it('serves geopay\'s shapes from its own tables, not geopay\'s', async () => {
    const opened = await t.call('POST', '/v1/accounts', { key, idem: idem(), body: { currency: 'USD', overdraftLimit: '5', metadata: { b: 1, a: 2 } } });
    expect(opened.status).toBe(201);
    expect(opened.body).toEqual({
      id: expect.stringMatching(/^acc_local_[0-9a-f]{32}$/), tenantId: expect.stringMatching(/^ten_/), currency: 'USD', region: 'local',
      status: 'open', balance: '0', held: '0', available: '5', overdraftLimit: '5', seq: 1, metadata: { a: 2, b: 1 }, createdAt: expect.any(String),
    });
    const read = await t.call('GET', `/v1/accounts/${opened.body.id}`, { key });
    expect(read.status).toBe(200);
    expect(read.body).toEqual(opened.body);
    expect(await one<{ n: bigint }>('SELECT count(*) AS n FROM baseline_accounts WHERE id = $1', [opened.body.id])).toEqual({ n: 1n });
    expect(await one<{ n: bigint }>('SELECT count(*) AS n FROM accounts')).toEqual({ n: 0n });

    // Routes outside the subset are not served at all.
    expect((await t.call('POST', `/v1/accounts/${opened.body.id}/freeze`, { key, idem: idem() })).status).toBe(404);
    expect((await t.call('GET', `/v1/accounts/${opened.body.id}/statement`, { key })).status).toBe(404);
  });

  it('deposits, transfers and withdraws: 201 settled, balances and journal agree', async () => {
    const a = await t.account(key);
    const b = await t.account(key);
    const dep = await t.deposit(key, a, '1000');
    expect(dep.status).toBe(201);
    expect(dep.body).toMatchObject({ kind: 'deposit', sourceAccountId: 'ext_local_USD', destinationAccountId: a, amount: '1000', state: 'settled', refunded: '0' });

    const tr = await transfer(a, b, '300', idem(), { metadata: { order: 'o-1' } });
    expect(tr.status).toBe(201);
    expect(tr.body).toEqual({
      id: expect.stringMatching(/^tr_local_[0-9a-f]{32}$/), kind: 'transfer', sourceAccountId: a, destinationAccountId: b, amount: '300', currency: 'USD',
      state: 'settled', refusalCode: null, holdId: null, refundOf: null, refunded: '0', metadata: { order: 'o-1' },
      createdAt: expect.any(String), updatedAt: tr.body.createdAt,
    });
    const got = await t.call('GET', `/v1/transfers/${tr.body.id}`, { key });
    expect(got.status).toBe(200);
    expect(got.body).toEqual(tr.body);

    const wd = await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: b, amount: '100', currency: 'USD' } });
    expect(wd.status).toBe(201);
    expect(wd.body).toMatchObject({ kind: 'withdrawal', sourceAccountId: b, destinationAccountId: 'ext_local_USD', state: 'settled' });

    expect(await balance(a)).toBe('700');
    expect(await balance(b)).toBe('200');
    const acc = (await t.call('GET', `/v1/accounts/${a}`, { key })).body;
    expect(acc.seq).toBe(3); // open, deposit, transfer
    const legs = await t.node.pool.query<{ account_id: string; amount: bigint; balance_after: bigint; seq: bigint }>(
      'SELECT account_id, amount, balance_after, seq FROM baseline_journal WHERE transfer_id = $1 ORDER BY amount', [tr.body.id]);
    expect(legs.rows).toEqual([
      { account_id: a, amount: -300n, balance_after: 700n, seq: 3n },
      { account_id: b, amount: 300n, balance_after: 300n, seq: 2n },
    ]);
  });

  it('business refusals answer geopay\'s codes and move nothing', async () => {
    const a = await t.account(key);
    const b = await t.account(key);
    const eur = await t.account(key, 'EUR');
    await t.deposit(key, a, '10');
    expectProblem(await transfer(a, b, '11'), 422, 'insufficient_funds');
    expectProblem(await transfer(a, a, '1'), 422, 'same_account');
    expectProblem(await transfer(a, eur, '1'), 422, 'currency_mismatch');
    expectProblem(await deposit(key, eur, '1'), 422, 'currency_mismatch');
    expectProblem(await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: b, amount: '1', currency: 'USD' } }), 422, 'insufficient_funds');
    expectProblem(await transfer(a, b, '0'), 400, 'invalid_amount');
    expectProblem(await transfer(a, 'acc_local_00000000000000000000000000000000', '1'), 404, 'account_not_found');
    expectProblem(await transfer('ext_local_USD', a, '1'), 404, 'account_not_found');
    expectProblem(await t.call('POST', '/v1/transfers', { key, body: { sourceAccountId: a, destinationAccountId: b, amount: '1', currency: 'USD' } }), 400, 'idempotency_key_required');
    expect(await balance(a)).toBe('10');
    expect(await balance(b)).toBe('0');
    expect(await one<{ n: bigint }>('SELECT count(*) AS n FROM baseline_journal WHERE account_id = ANY($1)', [[a, b, eur]])).toEqual({ n: 1n });
  });

  it('a replayed key answers the same and applies once; a different request under it is 422', async () => {
    const a = await t.account(key);
    const b = await t.account(key);
    await t.deposit(key, a, '100');
    const k = idem();
    const first = await transfer(a, b, '40', k);
    expect(first.status).toBe(201);
    // Sequential and concurrent replays alike.
    const again = [await transfer(a, b, '40', k), ...(await Promise.all(Array.from({ length: 10 }, () => transfer(a, b, '40', k))))];
    for (const r of again) {
      expect(r.status).toBe(201);
      expect(r.body).toEqual(first.body);
    }
    expectProblem(await transfer(a, b, '41', k), 422, 'idempotency_key_reused');
    expectProblem(await t.call('POST', '/v1/accounts', { key, idem: k, body: { currency: 'USD' } }), 422, 'idempotency_key_reused');
    expect(await balance(a)).toBe('60');
    expect(await balance(b)).toBe('40');
    expect(await one<{ n: bigint }>('SELECT count(*) AS n FROM baseline_transfers WHERE source_id = $1', [a])).toEqual({ n: 1n });

    // A stored refusal replays as that refusal, even once the funds are there.
    const k2 = idem();
    expectProblem(await transfer(b, a, '50', k2), 422, 'insufficient_funds');
    await t.deposit(key, b, '100');
    expectProblem(await transfer(b, a, '50', k2), 422, 'insufficient_funds');
    expect(await balance(b)).toBe('140');

    // So does an open.
    const ko = idem();
    const o1 = await t.call('POST', '/v1/accounts', { key, idem: ko, body: { currency: 'GBP' } });
    const o2 = await t.call('POST', '/v1/accounts', { key, idem: ko, body: { currency: 'GBP' } });
    expect(o1.status).toBe(201);
    expect(o2.status).toBe(201);
    expect(o2.body).toEqual(o1.body);
    expect(await one<{ n: bigint }>("SELECT count(*) AS n FROM baseline_accounts WHERE currency = 'GBP'")).toEqual({ n: 1n });
  });

  it('100 concurrent 1-unit transfers out of 50: exactly 50 succeed, none overdraws', async () => {
    const src = await t.account(key);
    const dst = await t.account(key);
    expect((await t.deposit(key, src, '50')).status).toBe(201);
    const results = await Promise.all(Array.from({ length: 100 }, () => transfer(src, dst, '1')));
    expect(results.filter((r) => r.status >= 500)).toEqual([]);
    expect(results.filter((r) => r.status === 201)).toHaveLength(50);
    const refused = results.filter((r) => r.status === 422);
    expect(refused).toHaveLength(50);
    for (const r of refused) expect(r.body.code).toBe('insufficient_funds');
    expect(await balance(src)).toBe('0');
    expect(await balance(dst)).toBe('50');
    const j = await one<{ min: bigint; n: bigint }>('SELECT min(balance_after) AS min, count(*) AS n FROM baseline_journal WHERE account_id = $1', [src]);
    expect(j).toEqual({ min: 0n, n: 51n });
  });

  it('transfers both ways between the same accounts and deposits on the hot external row all complete', async () => {
    const a = await t.account(key);
    const b = await t.account(key);
    await t.deposit(key, a, '1000');
    await t.deposit(key, b, '1000');
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 4 === 3
      ? t.deposit(key, i % 8 === 3 ? a : b, '1')
      : i % 2 === 0 ? transfer(a, b, '1') : transfer(b, a, '1'))));
    expect(results.filter((r) => r.status !== 201).map((r) => r.body)).toEqual([]);
    expect(BigInt(await balance(a)) + BigInt(await balance(b))).toBe(2050n);
  });

  it('the ledger sums to zero and every balance is the sum of its postings', async () => {
    expect(await one('SELECT coalesce(sum(amount), 0) AS s FROM baseline_journal')).toEqual({ s: '0' });
    const off = await t.node.pool.query(`
      SELECT a.id FROM baseline_accounts a LEFT JOIN (SELECT account_id, sum(amount) AS s FROM baseline_journal GROUP BY account_id) j ON j.account_id = a.id
       WHERE a.balance <> coalesce(j.s, 0)`);
    expect(off.rows).toEqual([]);
    const legs = await t.node.pool.query(`
      SELECT t.id FROM baseline_transfers t JOIN baseline_journal j ON j.transfer_id = t.id
       GROUP BY t.id, t.amount HAVING count(*) <> 2 OR sum(j.amount) <> 0 OR max(j.amount) <> t.amount`);
    expect(legs.rows).toEqual([]);
    const ext = await one<{ balance: bigint }>("SELECT balance FROM baseline_accounts WHERE id = 'ext_local_USD'");
    expect(ext.balance < 0n).toBe(true);
  });

  it('another tenant\'s accounts and transfers answer 404, exactly like missing ones', async () => {
    const other = await t.tenant('other');
    const mine = await t.account(key);
    const theirs = await t.account(other.key);
    await t.deposit(key, mine, '10');
    await t.deposit(other.key, theirs, '10');
    const tr = await transfer(mine, await t.account(key), '1');
    expect(tr.status).toBe(201);

    expectProblem(await t.call('GET', `/v1/accounts/${theirs}`, { key }), 404, 'account_not_found');
    expectProblem(await t.call('GET', '/v1/accounts/ext_local_USD', { key }), 404, 'account_not_found');
    expectProblem(await transfer(mine, theirs, '1'), 404, 'account_not_found');
    expectProblem(await transfer(theirs, mine, '1'), 404, 'account_not_found');
    expectProblem(await deposit(key, theirs, '1'), 404, 'account_not_found');
    expectProblem(await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: theirs, amount: '1', currency: 'USD' } }), 404, 'account_not_found');
    expectProblem(await t.call('GET', `/v1/transfers/${tr.body.id}`, { key: other.key }), 404, 'transfer_not_found');
    expectProblem(await t.call('GET', '/v1/transfers/tr_local_00000000000000000000000000000000', { key }), 404, 'transfer_not_found');
    expect(await balance(mine)).toBe('9');
    expect((await t.call('GET', `/v1/accounts/${theirs}`, { key: other.key })).body.balance).toBe('10');
    // A rejected request leaves no key behind: the same key works for a valid request after.
    const k = idem();
    expectProblem(await transfer(mine, theirs, '1', k), 404, 'account_not_found');
    expect(await one<{ n: bigint }>('SELECT count(*) AS n FROM baseline_idempotency WHERE key = $1', [k])).toEqual({ n: 0n });
  });
});
