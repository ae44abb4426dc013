// One writer per account under contention: 200 concurrent 1-unit transfers out of 100 units
// succeed exactly 100 times and never overdraw; 1,000 concurrent deposits to one account are
// group-committed, counted both by the node and by the inserting transaction ids in PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

let t: TestNode;
let key: string;
let commits = 0;

beforeAll(async () => {
  t = await startTestNode('concurrency', {}, () => { commits++; });
  key = (await t.tenant()).key;
});
afterAll(async () => { await t?.close(); });

describe('contention on one account', () => {
  it('200 concurrent 1-unit transfers out of 100: exactly 100 succeed, none overdraws', async () => {
    const src = await t.account(key);
    const dst = await t.account(key);
    expect((await t.deposit(key, src, '100')).status).toBe(201);

    const results = await Promise.all(Array.from({ length: 200 }, () =>
      t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: src, destinationAccountId: dst, amount: '1', currency: 'USD' } })));

    const ok = results.filter((r) => r.status === 201 || r.status === 202);
    const refused = results.filter((r) => r.status === 422);
    expect(ok).toHaveLength(100);
    expect(refused).toHaveLength(100);
    for (const r of refused) expect(r.body.code).toBe('insufficient_funds');
    expect(results.filter((r) => r.status >= 500)).toHaveLength(0);

    const { rows } = await t.node.pool.query<{ min: bigint; n: bigint }>(
      'SELECT min(balance_after) AS min, count(*) AS n FROM journal WHERE account_id = $1', [src]);
    expect(rows[0]!.min).toBe(0n);
    // open + deposit credit + 100 debits
    expect(rows[0]!.n).toBe(102n);
    expect((await t.call('GET', `/v1/accounts/${src}`, { key })).body.balance).toBe('0');
    await t.node.relay.runOnce(0);
    expect((await t.call('GET', `/v1/accounts/${dst}`, { key })).body.balance).toBe('100');
    const debits = await t.node.pool.query<{ n: bigint }>("SELECT count(*) AS n FROM transfers WHERE source_id = $1", [src]);
    expect(debits.rows[0]!.n).toBe(100n);
  });

  it('1,000 concurrent deposits to one account commit in far fewer than 1,000 transactions', async () => {
    const acc = await t.account(key);
    const before = commits;
    const statementsBefore = t.node.writer.statements;
    const results = await Promise.all(Array.from({ length: 1000 }, () => t.deposit(key, acc, '3')));
    expect(results.filter((r) => r.status !== 201 && r.status !== 202)).toEqual([]);
    await t.node.relay.runOnce(0);
    expect((await t.call('GET', `/v1/accounts/${acc}`, { key })).body.balance).toBe('3000');

    // Each commit statement of the node's writer is one PostgreSQL transaction; both legs of
    // 1,000 deposits (debit on the external account, credit on this one) are in there.
    const sets = commits - before;
    const txs = t.node.writer.statements - statementsBefore;
    const credits = await t.node.pool.query<{ n: bigint; tx: bigint }>(
      "SELECT count(*) AS n, count(DISTINCT xmin::text) AS tx FROM journal WHERE account_id = $1 AND kind = 'credit'", [acc]);
    expect(credits.rows[0]!.n).toBe(1000n);
    const creditTxs = Number(credits.rows[0]!.tx);
    console.log(`1000 deposits: ${creditTxs} transactions hold the credits; ${txs} transactions, ${sets} actor batches in all (both legs)`);
    expect(creditTxs).toBeLessThan(100);
    expect(txs).toBeLessThan(100);
    expect(sets).toBeLessThan(300);
  });

  it('replays of finished requests, merged into commits with fresh ones, spoil nothing', async () => {
    const accounts = await Promise.all(Array.from({ length: 20 }, () => t.account(key)));
    for (const a of accounts) await t.deposit(key, a, '1000');
    const body = (i: number) => ({ sourceAccountId: accounts[i % 20], destinationAccountId: accounts[(i + 1) % 20], amount: '3', currency: 'USD' });
    const keys = Array.from({ length: 60 }, () => idem());
    const first = await Promise.all(keys.map((k, i) => t.call('POST', '/v1/transfers', { key, idem: k, body: body(i) })));
    expect(first.every((r) => r.status === 201)).toBe(true);
    // The replays take the optimistic path, lose their key to the stored one and are redone;
    // the fresh transfers sharing their commit statements must not pay for it.
    const mixed = await Promise.all([
      ...keys.map((k, i) => t.call('POST', '/v1/transfers', { key, idem: k, body: body(i) })),
      ...Array.from({ length: 60 }, (_, i) => t.call('POST', '/v1/transfers', { key, idem: idem(), body: body(i + 7) })),
    ]);
    expect(mixed.filter((r) => r.status !== 201).map((r) => `${r.status} ${r.body.code}`)).toEqual([]);
    mixed.slice(0, 60).forEach((r, i) => expect(r.body.id).toBe(first[i]!.body.id));
  });
});
