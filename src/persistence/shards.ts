// Shard rows and their fencing epochs. Taking a shard bumps its epoch; every journal write
// checks it in the same transaction (src/persistence/journal.ts), so a stale owner is fenced.
import type { Pool } from './db.ts';
import type { ShardId } from '../domain/ids.ts';
import { parseShardId, shardParts } from '../domain/ids.ts';

/** Takes a shard's next fencing epoch. The row lock waits for any write of the previous owner still in flight. */
export async function bumpEpoch(pool: Pool, shard: ShardId, nodeId: string): Promise<bigint> {
  const { region, bucket } = shardParts(shard);
  const { rows } = await pool.query<{ epoch: bigint }>(
    `INSERT INTO shards (id, region, bucket, epoch, owner) VALUES ($1, $2, $3, 1, $4)
     ON CONFLICT (id) DO UPDATE SET epoch = shards.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
     RETURNING epoch`,
    [shard, region, bucket, nodeId],
  );
  return rows[0]!.epoch;
}

/** Every shard the database knows. */
export async function knownShards(pool: Pool): Promise<ShardId[]> {
  const { rows } = await pool.query<{ id: string }>('SELECT id FROM shards');
  return rows.map((r) => parseShardId(r.id)).filter((s): s is ShardId => s !== undefined);
}

/** Every shard's current epoch: a single node compares them with its own to notice a successor. */
export async function shardEpochs(pool: Pool): Promise<Map<ShardId, bigint>> {
  const { rows } = await pool.query<{ id: string; epoch: bigint }>('SELECT id, epoch FROM shards');
  const out = new Map<ShardId, bigint>();
  for (const r of rows) {
    const id = parseShardId(r.id);
    if (id) out.set(id, r.epoch);
  }
  return out;
}
