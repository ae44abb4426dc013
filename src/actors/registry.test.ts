// Accounts at rest (registry.ts, restIfIdle): an idle actor stops and leaves its state on the
// registry's handle, and the next message spawns one from it. Against the real PostgreSQL:
// nothing told to a resting account is lost or reordered, its state survives, passivation
// snapshots it (waking it only to write the snapshot), and a lost shard retires it.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccountId } from '../domain/ids.ts';
import type { TestNode } from '../../test/helpers/node.ts';
import { idem, startTestNode } from '../../test/helpers/node.ts';

let t: TestNode;
let key: string;

beforeAll(async () => {
  t = await startTestNode('registry_rest', { actorIdleMs: 600, mailboxLimit: 64 });
  key = (await t.tenant()).key;
});
afterAll(async () => { await t?.close(); });

const registry = () => t.node.registry;

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const seqs = async (id: string) => {
  const { rows } = await t.node.pool.query<{ j: bigint | null; s: bigint | null }>(
    'SELECT (SELECT max(seq) FROM journal WHERE account_id = $1) AS j, (SELECT seq FROM snapshots WHERE account_id = $1) AS s', [id]);
  return { journal: Number(rows[0]!.j ?? 0), snapshot: Number(rows[0]!.s ?? 0) };
};
const inspect = async (id: string) => (await t.call('GET', `/v1/actors/accounts/${id}`, { key: t.adminKey })).body;

describe('accounts at rest', () => {
  it('an idle account rests, and what it is told next is all taken, in order, on its state', async () => {
    const acc = await t.account(key);
    expect((await t.deposit(key, acc, '5')).status).toBe(201);
    await until('the actor to rest', () => registry().awakeCount() === 0);
    expect(registry().mailboxDepth(acc as AccountId)).toBe(0);
    expect((await inspect(acc)).resident).toBe(true);
    // Woken by a burst: deposits and reads interleaved, every one answered.
    const calls = Array.from({ length: 40 }, (_, i) => (i % 4 === 3
      ? t.call('GET', `/v1/accounts/${acc}`, { key })
      : t.deposit(key, acc, String(i + 1))));
    const answers = await Promise.all(calls);
    expect(answers.map((r) => r.status)).toEqual(Array.from({ length: 40 }, (_, i) => (i % 4 === 3 ? 200 : 201)));
    const deposited = 5 + Array.from({ length: 40 }, (_, i) => i).filter((i) => i % 4 !== 3).reduce((sum, i) => sum + i + 1, 0);
    await until('the actor to rest again', () => registry().awakeCount() === 0);
    // One at a time too: each deposit wakes it and it rests again.
    for (let i = 0; i < 5; i++) {
      expect((await t.deposit(key, acc, '1')).status).toBe(201);
      await until('the actor to rest', () => registry().awakeCount() === 0);
    }
    const view = (await t.call('GET', `/v1/accounts/${acc}`, { key })).body;
    expect(view).toMatchObject({ balance: String(deposited + 5), seq: 2 + 30 + 5 });
    expect((await seqs(acc)).journal).toBe(37);
  });

  it('passivation snapshots a resting account, and one snapshotted already stops without waking', async () => {
    const acc = await t.account(key);
    await t.deposit(key, acc, '9');
    await until('passivation', async () => (await inspect(acc)).resident === false);
    expect(await seqs(acc)).toEqual({ journal: 2, snapshot: 2 });
    // Back from the snapshot, it rests with nothing to snapshot: passivated again, unchanged.
    expect((await t.call('GET', `/v1/accounts/${acc}`, { key })).body).toMatchObject({ balance: '9', seq: 2 });
    expect((await inspect(acc)).resident).toBe(true);
    await until('passivation', async () => (await inspect(acc)).resident === false);
    expect(await seqs(acc)).toEqual({ journal: 2, snapshot: 2 });
  });

  it('a lost shard retires its resting accounts at once; the next request reloads from the journal', async () => {
    const acc = await t.account(key);
    await t.deposit(key, acc, '11');
    await until('the actor to rest', () => registry().awakeCount() === 0);
    const before = registry().residentCount();
    registry().retireShard(registry().shardOf(acc as AccountId));
    expect(registry().residentCount()).toBeLessThan(before);
    expect((await inspect(acc)).resident).toBe(false);
    expect((await t.deposit(key, acc, '1')).status).toBe(201);
    expect((await t.call('GET', `/v1/accounts/${acc}`, { key })).body).toMatchObject({ balance: '12', seq: 3 });
  });

  it('a hold kept across rests is captured from the woken state', async () => {
    const src = await t.account(key);
    const dst = await t.account(key);
    await t.deposit(key, src, '100');
    const hold = await t.call('POST', '/v1/holds', { key, idem: idem(), body: { sourceAccountId: src, destinationAccountId: dst, amount: '60', currency: 'USD' } });
    expect(hold.status).toBe(201);
    await until('the actors to rest', () => registry().awakeCount() === 0);
    const cap = await t.call('POST', `/v1/holds/${hold.body.id}/capture`, { key, idem: idem(), body: { amount: '60' } });
    expect(cap.status).toBeLessThan(300);
    await until('the credit to land', async () => (await t.call('GET', `/v1/accounts/${dst}`, { key })).body.balance === '60');
    expect((await t.call('GET', `/v1/accounts/${src}`, { key })).body).toMatchObject({ balance: '40', held: '0' });
  });
});
