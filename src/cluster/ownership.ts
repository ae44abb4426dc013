// Who may write a shard, and at which fencing epoch. In single-node mode this node owns every
// shard: it bumps each shard's epoch in PostgreSQL when it first takes it, so a process from
// an earlier start (a zombie) is fenced out by the journal's guard. The cluster issue puts
// Redis leases behind the same interface.
import type { Logger } from 'pino';
import type { Pool } from '../persistence/db.ts';
import { GeopayError } from '../domain/errors.ts';

export interface ShardInfo {
  shard: string;
  owner: string;
  epoch: bigint;
  region: string;
  nodeId: string;
  leaseExpiresAt: string | null;
}

/** Where a shard's commands run now. */
export type Route = { kind: 'local' } | { kind: 'remote'; url: string; nodeId: string } | { kind: 'unavailable'; reason: string };

export interface Ownership {
  readonly nodeId: string;
  readonly region: string;
  /** The epoch this node writes the shard at; takes the shard if it may. Throws shard_unavailable. */
  epochFor(shard: string): Promise<bigint>;
  /** A write was fenced: this node no longer owns the shard at that epoch. */
  fenced(shard: string, epoch: bigint): void;
  info(shard: string): ShardInfo | undefined;
  shards(): ShardInfo[];
  /** Here, at its owner, or nowhere for now (the caller answers 503 and the client retries). */
  route(shard: string): Route | Promise<Route>;
  /** Owned here and writable now (synchronous; for the relay and sweeper, which act only on their own shards). */
  isLocal(shard: string): boolean;
}

export class SingleNodeOwnership implements Ownership {
  private readonly epochs = new Map<string, Promise<bigint>>();
  private readonly known = new Map<string, bigint>();
  private readonly lost = new Set<string>();

  constructor(private readonly pool: Pool, readonly nodeId: string, readonly region: string, private readonly logger: Logger) {}

  /** Takes every shard already in the database and this region's buckets, bumping each epoch. */
  async start(buckets: number): Promise<void> {
    const { rows } = await this.pool.query<{ id: string }>('SELECT id FROM shards');
    const ids = new Set(rows.map((r) => r.id));
    for (let b = 0; b < buckets; b++) ids.add(`${this.region}/${b}`);
    for (const id of ids) await this.epochFor(id);
    this.logger.info({ shards: ids.size }, 'shards taken');
  }

  epochFor(shard: string): Promise<bigint> {
    if (this.lost.has(shard)) return Promise.reject(new GeopayError('shard_unavailable', `shard ${shard} was taken by another node`));
    let p = this.epochs.get(shard);
    if (!p) {
      p = this.take(shard);
      this.epochs.set(shard, p);
      p.catch(() => this.epochs.delete(shard));
    }
    return p;
  }

  private async take(shard: string): Promise<bigint> {
    const epoch = await bumpEpoch(this.pool, shard, this.nodeId);
    this.known.set(shard, epoch);
    return epoch;
  }

  fenced(shard: string, epoch: bigint): void {
    if (this.known.get(shard) !== epoch) return;
    this.lost.add(shard);
    this.logger.error({ shard, epoch: epoch.toString() }, 'shard fenced: another process took it');
  }

  info(shard: string): ShardInfo | undefined {
    const epoch = this.known.get(shard);
    if (epoch === undefined) return undefined;
    return { shard, owner: this.lost.has(shard) ? 'unknown' : this.nodeId, epoch, region: this.region, nodeId: this.nodeId, leaseExpiresAt: null };
  }

  shards(): ShardInfo[] {
    return [...this.known.keys()].map((s) => this.info(s)!);
  }

  isLocal(shard: string): boolean {
    return !this.lost.has(shard);
  }

  route(shard: string): Route {
    return this.lost.has(shard) ? { kind: 'unavailable', reason: 'taken by another process' } : { kind: 'local' };
  }
}

/** Takes a shard's next fencing epoch. The row lock waits for any write of the previous owner still in flight. */
export async function bumpEpoch(pool: Pool, shard: string, nodeId: string): Promise<bigint> {
  const [region, bucket] = shard.split('/');
  const { rows } = await pool.query<{ epoch: bigint }>(
    `INSERT INTO shards (id, region, bucket, epoch, owner) VALUES ($1, $2, $3, 1, $4)
     ON CONFLICT (id) DO UPDATE SET epoch = shards.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
     RETURNING epoch`,
    [shard, region, Number(bucket), nodeId],
  );
  return rows[0]!.epoch;
}
