// The node's group-commit writer: write sets queued while a statement is in flight leave
// together; when one of them loses a race (its idempotency key was taken), the statement is
// redone set by set, so only that one fails and the others commit. A set made of parts (an
// actor's commands) that fails with an error the server reported is redone part by part.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { startTestNode } from './helpers/node.ts';
import type { Parts } from '../src/persistence/writer.ts';
import { GroupWriter } from '../src/persistence/writer.ts';
import { WriteConflict, emptyWriteSet } from '../src/persistence/journal.ts';
import type { WriteSet } from '../src/persistence/journal.ts';
import type { AccountId, Region } from '../src/domain/ids.ts';
import type { Currency } from '../src/domain/money.ts';

let t: TestNode;
beforeAll(async () => { t = await startTestNode('writer'); });
afterAll(async () => { await t?.close(); });

describe('GroupWriter', () => {
  it('isolates the set that lost a race; the sets merged with it still commit', async () => {
    const pool = t.node.pool;
    const { rows } = await pool.query<{ id: string; epoch: bigint }>('SELECT id, epoch FROM shards ORDER BY id LIMIT 1');
    const shard = rows[0]!;
    const withKey = (key: string): WriteSet => ({
      ...emptyWriteSet(shard.id, shard.epoch, 'test'),
      idempotency: [{ tenantId: 'ten_writer', key, requestHash: 'h', resourceId: null, statusCode: 200, response: { key } }],
    });
    await pool.query("INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ('ten_writer', 'taken', 'h')");
    const writer = new GroupWriter(pool, { lanes: 1, maxSets: 16 });
    // The first set occupies the only lane; the next three, handed over while it is in
    // flight, queue and leave in one statement.
    const first = writer.commit(withKey('first'));
    await new Promise((r) => setImmediate(r));
    expect(writer.statements).toBe(1);
    const results = await Promise.allSettled([writer.commit(withKey('a')), writer.commit(withKey('taken')), writer.commit(withKey('b'))]);
    await first;
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(WriteConflict);
    const keys = await pool.query<{ key: string }>("SELECT key FROM idempotency_keys WHERE tenant_id = 'ten_writer' ORDER BY key");
    expect(keys.rows.map((r) => r.key)).toEqual(['a', 'b', 'first', 'taken']);
    expect(writer.statements).toBe(5); // first, the merged three (refused), then a, taken, b alone
  });

  it('sends the sets handed over in one turn of the event loop in one statement, lanes free or not', async () => {
    const pool = t.node.pool;
    const { rows } = await pool.query<{ id: string; epoch: bigint }>('SELECT id, epoch FROM shards ORDER BY id LIMIT 1');
    const shard = rows[0]!;
    const writer = new GroupWriter(pool, { lanes: 4, maxSets: 16 });
    const set = (key: string): WriteSet => ({
      ...emptyWriteSet(shard.id, shard.epoch, 'test'),
      idempotency: [{ tenantId: 'ten_turn', key, requestHash: 'h', resourceId: null, statusCode: 200, response: null }],
    });
    await Promise.all(['t1', 't2', 't3', 't4', 't5'].map((k) => writer.commit(set(k))));
    expect({ statements: writer.statements, sets: writer.sets }).toEqual({ statements: 1, sets: 5 });
    // Handed over in two turns, with lanes free: a statement each.
    await Promise.all([writer.commit(set('u1')), new Promise((r) => setImmediate(r)).then(() => writer.commit(set('u2')))]);
    expect(writer.statements).toBe(3);
    const keys = await pool.query<{ key: string }>("SELECT key FROM idempotency_keys WHERE tenant_id = 'ten_turn' ORDER BY key");
    expect(keys.rows.map((r) => r.key)).toEqual(['t1', 't2', 't3', 't4', 't5', 'u1', 'u2']);
  });

  /**
   * Parts that each store one key, `bad` ones with a row the server fails (a negative overdraft
   * limit, 23514). The keys in `claimedMeanwhile` are left out of the whole: as if another node
   * claimed them between the failed whole and the redo.
   */
  function keyParts(shard: { id: string; epoch: bigint }, tenant: string, keys: string[], bad: Set<string>, claimedMeanwhile = new Set<string>()): Parts<string[]> {
    const partOf = (key: string): WriteSet => ({
      ...emptyWriteSet(shard.id, shard.epoch, 'test'),
      idempotency: [{ tenantId: tenant, key, requestHash: 'h', resourceId: null, statusCode: 200, response: { key } }],
      accounts: bad.has(key) ? [{
        id: `acc_eu_${'9'.repeat(32)}` as AccountId, tenantId: null, kind: 'customer', currency: 'USD' as Currency, region: 'eu' as Region,
        shard: shard.id, overdraftLimit: -1n, metadata: {}, at: new Date().toISOString(),
      }] : [],
    });
    const sets = keys.map(partOf);
    return {
      whole: {
        ...emptyWriteSet(shard.id, shard.epoch, 'test'),
        idempotency: sets.flatMap((w) => w.idempotency).filter((k) => !claimedMeanwhile.has(k.key)),
        accounts: sets.flatMap((w) => w.accounts),
      },
      count: keys.length,
      start: [],
      alone: (progress, i) => ({ ws: sets[i], next: [...progress, `${keys[i]}:committed`] }),
      failed: (progress, i, err) => [...progress, `${keys[i]}:failed ${(err as { code?: string }).code}`],
    };
  }

  it('redoes part by part a set that failed with a server error; its neighbours in the statement commit alone', async () => {
    const pool = t.node.pool;
    const { rows } = await pool.query<{ id: string; epoch: bigint }>('SELECT id, epoch FROM shards ORDER BY id LIMIT 1');
    const shard = rows[0]!;
    const writer = new GroupWriter(pool, { lanes: 1, maxSets: 16 });
    const first = writer.commit({ ...emptyWriteSet(shard.id, shard.epoch, 'test'), idempotency: [{ tenantId: 'ten_parts', key: 'first', requestHash: 'h', resourceId: null, statusCode: 200, response: null }] });
    await new Promise((r) => setImmediate(r)); // first leaves alone
    const neighbour = writer.commit({ ...emptyWriteSet(shard.id, shard.epoch, 'test'), idempotency: [{ tenantId: 'ten_parts', key: 'neighbour', requestHash: 'h', resourceId: null, statusCode: 200, response: null }] });
    const parts = writer.commitParts(keyParts(shard, 'ten_parts', ['p1', 'bad', 'p3'], new Set(['bad'])));
    await first;
    await neighbour;
    expect(await parts).toMatchObject({ type: 'parts', progress: ['p1:committed', 'bad:failed 23514', 'p3:committed'] });
    const keys = await pool.query<{ key: string }>("SELECT key FROM idempotency_keys WHERE tenant_id = 'ten_parts' ORDER BY key");
    expect(keys.rows.map((r) => r.key)).toEqual(['first', 'neighbour', 'p1', 'p3']);
    const accounts = await pool.query("SELECT 1 FROM accounts WHERE overdraft_limit < 0");
    expect(accounts.rowCount).toBe(0);
    // first; neighbour and the parts merged (failed); neighbour alone; the parts' whole alone (failed); then p1, bad, p3.
    expect(writer.statements).toBe(7);
    expect(writer.sets).toBe(4);
  });

  it('stops the redo at a part that fails otherwise than by a server error; the parts after it are not tried', async () => {
    const pool = t.node.pool;
    const { rows } = await pool.query<{ id: string; epoch: bigint }>('SELECT id, epoch FROM shards ORDER BY id LIMIT 1');
    const shard = rows[0]!;
    await pool.query("INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ('ten_abort', 'taken', 'h')");
    const writer = new GroupWriter(pool, { lanes: 1, maxSets: 16 });
    const outcome = await writer.commitParts(keyParts(shard, 'ten_abort', ['q1', 'bad', 'taken', 'q4'], new Set(['bad']), new Set(['taken'])));
    expect(outcome.type).toBe('stopped');
    expect(outcome.type === 'stopped' && outcome.error).toBeInstanceOf(WriteConflict);
    const keys = await pool.query<{ key: string }>("SELECT key FROM idempotency_keys WHERE tenant_id = 'ten_abort' ORDER BY key");
    expect(keys.rows.map((r) => r.key)).toEqual(['q1', 'taken']);
    expect(writer.statements).toBe(4); // the whole (failed), then q1, bad, taken
  });
});
