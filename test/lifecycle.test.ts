// The life of an account actor: snapshots every N postings, passivation when idle (with a
// snapshot), recovery from snapshot + journal, a failing write answered and followed by a
// reload, a bounded mailbox, drain at shutdown, and fencing of a zombie node by epoch.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { startNode } from '../src/node.ts';
import type { AccountId } from '../src/domain/ids.ts';

let t: TestNode;
let key: string;

beforeAll(async () => {
  t = await startTestNode('lifecycle', { snapshotEvery: 5, actorIdleMs: 300, mailboxLimit: 8 });
  key = (await t.tenant()).key;
});
afterAll(async () => { await t?.close(); });

const seqs = async (id: string) => {
  const { rows } = await t.node.pool.query<{ j: bigint | null; s: bigint | null }>(
    'SELECT (SELECT max(seq) FROM journal WHERE account_id = $1) AS j, (SELECT seq FROM snapshots WHERE account_id = $1) AS s', [id]);
  return { journal: Number(rows[0]!.j ?? 0), snapshot: Number(rows[0]!.s ?? 0) };
};

describe('account actor lifecycle', () => {
  it('snapshots every N postings and recovers from snapshot plus journal', async () => {
    const acc = await t.account(key);
    for (let i = 0; i < 12; i++) expect((await t.deposit(key, acc, '10')).status).toBe(201);
    const s = await seqs(acc);
    expect(s.journal).toBe(13);
    expect(s.snapshot).toBeGreaterThanOrEqual(10);
    await t.restart();
    expect((await t.call('GET', `/v1/accounts/${acc}`, { key })).body).toMatchObject({ balance: '120', seq: 13 });
  });

  it('passivates an idle actor after a snapshot, and brings it back on demand', async () => {
    const acc = await t.account(key);
    await t.deposit(key, acc, '7');
    expect((await t.call('GET', `/v1/actors/accounts/${acc}`, { key: t.adminKey })).body.resident).toBe(true);
    await new Promise((r) => setTimeout(r, 1_000));
    const insp = await t.call('GET', `/v1/actors/accounts/${acc}`, { key: t.adminKey });
    expect(insp.body.resident).toBe(false);
    expect(insp.body.lastSnapshotSeq).toBe(2);
    expect(await seqs(acc)).toEqual({ journal: 2, snapshot: 2 });
    expect((await t.call('GET', `/v1/accounts/${acc}`, { key })).body).toMatchObject({ balance: '7', seq: 2 });
    expect((await t.call('GET', `/v1/actors/accounts/${acc}`, { key: t.adminKey })).body.resident).toBe(true);
  });

  it('a failing write gets an error reply, only that command fails, and the actor goes on', async () => {
    const acc = await t.account(key);
    await t.deposit(key, acc, '1000');
    // A trigger makes one particular posting fail inside the write transaction.
    await t.node.pool.query(`CREATE OR REPLACE FUNCTION geopay_test_fail() RETURNS trigger AS $$
      BEGIN IF NEW.amount = -777 THEN RAISE EXCEPTION 'planted failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`);
    await t.node.pool.query('CREATE TRIGGER geopay_test_fail BEFORE INSERT ON journal FOR EACH ROW EXECUTE FUNCTION geopay_test_fail()');
    try {
      const bad = await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: acc, amount: '777', currency: 'USD' } });
      // Refused by the database, not lost in transit: a 500 that leaks nothing of the cause.
      expect(bad.status).toBe(500);
      expect(bad.body.code).toBe('internal_error');
      expect(JSON.stringify(bad.body)).not.toContain('planted');
      const good = await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: acc, amount: '100', currency: 'USD' } });
      expect(good.status).toBe(201);
      // The poison in a batch of innocent commands: the batch is split, only it fails.
      const mixed = await Promise.all(['50', '777', '50', '50'].map((amount) =>
        t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: acc, amount, currency: 'USD' } })));
      expect(mixed.map((r) => r.status)).toEqual([201, 500, 201, 201]);
    } finally {
      await t.node.pool.query('DROP TRIGGER geopay_test_fail ON journal');
    }
    expect((await t.call('GET', `/v1/accounts/${acc}`, { key })).body).toMatchObject({ balance: '750', seq: 6 });
    const { rows } = await t.node.pool.query<{ n: bigint }>("SELECT count(*) AS n FROM transfers WHERE source_id = $1 AND amount = 777", [acc]);
    expect(rows[0]!.n).toBe(0n);
  });

  it('a full mailbox answers 503 mailbox_full; every request gets an answer', async () => {
    const src = await t.account(key);
    const dst = await t.account(key);
    await t.deposit(key, src, '1000');
    const results = await Promise.all(Array.from({ length: 60 }, () =>
      t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: src, destinationAccountId: dst, amount: '1', currency: 'USD' } })));
    const ok = results.filter((r) => r.status === 201 || r.status === 202).length;
    const full = results.filter((r) => r.status === 503 && r.body.code === 'mailbox_full').length;
    expect(ok + full).toBe(60);
    expect(full).toBeGreaterThan(0);
    await t.node.relay.runOnce(0);
    expect((await t.call('GET', `/v1/accounts/${src}`, { key })).body.balance).toBe(String(1000 - ok));
  });

  it('shutdown drains and snapshots every resident actor', async () => {
    const acc = await t.account(key);
    await Promise.all([t.deposit(key, acc, '1'), t.deposit(key, acc, '2'), t.deposit(key, acc, '3')]);
    await t.restart();
    expect(await seqs(acc)).toEqual({ journal: 4, snapshot: 4 });
  });

  it('a node started later fences the earlier one: the zombie cannot write', async () => {
    const acc = await t.account(key);
    await t.deposit(key, acc, '50');
    const shardEpoch = async () => {
      const shard = t.node.registry.shardOf(acc as AccountId);
      const { rows } = await t.node.pool.query<{ epoch: bigint }>('SELECT epoch FROM shards WHERE id = $1', [shard]);
      return rows[0]!.epoch;
    };
    const oldEpoch = await shardEpoch();
    // A second process on the same database takes every shard and bumps its epoch.
    const successor = await startNode({ ...t.cfg, port: 0, nodeId: 'successor' });
    try {
      expect(await shardEpoch()).toBe(oldEpoch + 1n);
      const z = await t.call('POST', '/v1/withdrawals', { key, idem: idem(), body: { accountId: acc, amount: '5', currency: 'USD' } });
      expect(z.status).toBe(503);
      expect(z.body.code).toBe('shard_unavailable');
      expect(z.headers['retry-after']).toBeDefined();
      const { rows } = await t.node.pool.query<{ n: bigint }>('SELECT count(*) AS n FROM journal WHERE account_id = $1 AND epoch = $2 AND kind = $3', [acc, oldEpoch, 'debit']);
      expect(rows[0]!.n).toBe(0n);
      // The successor writes at the new epoch.
      const res = await successor.app.inject({ method: 'POST', url: '/v1/withdrawals', headers: { authorization: `Bearer ${key}`, 'idempotency-key': idem(), 'content-type': 'application/json' }, payload: JSON.stringify({ accountId: acc, amount: '5', currency: 'USD' }) });
      expect(res.statusCode).toBe(201);
      const after = await t.node.pool.query<{ epoch: bigint; node_id: string }>("SELECT epoch, node_id FROM journal WHERE account_id = $1 AND kind = 'debit'", [acc]);
      expect(after.rows).toEqual([{ epoch: oldEpoch + 1n, node_id: 'successor' }]);
    } finally {
      await successor.stop();
    }
  });
});
