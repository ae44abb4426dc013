// The node's group-commit writer: write sets queued while a statement is in flight leave
// together; when one of them loses a race (its idempotency key was taken), the statement is
// redone set by set, so only that one fails and the others commit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { startTestNode } from './helpers/node.ts';
import { GroupWriter } from '../src/persistence/writer.ts';
import { WriteConflict, emptyWriteSet } from '../src/persistence/journal.ts';
import type { WriteSet } from '../src/persistence/journal.ts';

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
    // The first set occupies the only lane; the next three queue and leave in one statement.
    const first = writer.commit(withKey('first'));
    const results = await Promise.allSettled([writer.commit(withKey('a')), writer.commit(withKey('taken')), writer.commit(withKey('b'))]);
    await first;
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(WriteConflict);
    const keys = await pool.query<{ key: string }>("SELECT key FROM idempotency_keys WHERE tenant_id = 'ten_writer' ORDER BY key");
    expect(keys.rows.map((r) => r.key)).toEqual(['a', 'b', 'first', 'taken']);
    expect(writer.statements).toBe(5); // first, the merged three (refused), then a, taken, b alone
  });
});
