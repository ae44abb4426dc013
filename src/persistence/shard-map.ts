// The bucket count of the shard map, pinned in the database at its first start (migration
// 009): every node of a database must hash accounts into the same shards, or one account has
// two owners at two epochs. A database from before the pin gets the count its shards table shows.
import type { Pool } from './db.ts';

export type ShardMapCheck =
  | { kind: 'agrees'; buckets: number; pinnedNow: boolean }
  /** Pinned earlier at `stored`, or (a database older than the pin) its shards table holds `stored` buckets. */
  | { kind: 'disagrees'; stored: number; source: 'pinned' | 'shards' };

/**
 * Pins `buckets` if the database has no shard map yet, else compares. Concurrent first starts
 * serialise on the table lock: the first pins its count, the others read it.
 */
export async function pinShardBuckets(pool: Pool, buckets: number): Promise<ShardMapCheck> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('LOCK TABLE cluster_settings IN SHARE ROW EXCLUSIVE MODE');
    const pinned = await client.query<{ shard_buckets: number }>('SELECT shard_buckets FROM cluster_settings');
    let check: ShardMapCheck;
    if (pinned.rows[0]) {
      const stored = pinned.rows[0].shard_buckets;
      check = stored === buckets ? { kind: 'agrees', buckets, pinnedNow: false } : { kind: 'disagrees', stored, source: 'pinned' };
    } else {
      // Shards are taken bucket by bucket from 0, so an older database shows its count here.
      const seen = await client.query<{ n: number | null }>('SELECT max(bucket) + 1 AS n FROM shards');
      const stored = seen.rows[0]?.n ?? null;
      if (stored !== null && stored !== buckets) check = { kind: 'disagrees', stored, source: 'shards' };
      else {
        await client.query('INSERT INTO cluster_settings (shard_buckets) VALUES ($1)', [buckets]);
        check = { kind: 'agrees', buckets, pinnedNow: true };
      }
    }
    await client.query('COMMIT');
    return check;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** The one line a node prints when it refuses to start on a database of another shard map. */
export function shardMapRefusal(configured: number, check: Extract<ShardMapCheck, { kind: 'disagrees' }>): string {
  const where = check.source === 'pinned' ? `pinned at SHARD_BUCKETS=${check.stored} by its first start` : `whose shards table holds ${check.stored} buckets per region`;
  return `SHARD_BUCKETS=${configured} disagrees with this database, ${where}: set SHARD_BUCKETS=${check.stored} (another count would hash accounts into other shards, under other epochs)`;
}
