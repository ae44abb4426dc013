// Who may write a shard, and at which fencing epoch. In single-node mode this node owns every
// shard: it bumps each shard's epoch in PostgreSQL when it first takes it, so a process from
// an earlier start (a zombie) is fenced out by the journal's guard, and it re-reads the
// epochs at most every EPOCH_CHECK_MS so that the zombie's reads stop too. Cluster mode puts
// Redis leases behind the same interface (cluster-ownership.ts).
import type { Logger } from 'pino';
import type { Pool } from '../persistence/db.ts';
import { GeopayError } from '../domain/errors.ts';
import type { ShardId } from '../domain/ids.ts';
import { makeShardId, parseRegion } from '../domain/ids.ts';
import { bumpEpoch, knownShards, shardEpochs } from '../persistence/shards.ts';
import { BoundedCheck } from './bounded-check.ts';

export interface ShardInfo {
  shard: ShardId;
  owner: string;
  epoch: bigint;
  region: string;
  nodeId: string;
  leaseExpiresAt: string | null;
}

/** A live node of the cluster, as membership sees it. */
export interface MemberView { nodeId: string; region: string; url: string; heartbeatAgeMs: number }

/** Where a shard's commands run now. */
export type Route = { kind: 'local' } | { kind: 'remote'; url: string; nodeId: string } | { kind: 'unavailable'; reason: string };

export interface Ownership {
  readonly nodeId: string;
  readonly region: string;
  /** The epoch this node writes the shard at; takes the shard if it may. Throws shard_unavailable. */
  epochFor(shard: ShardId): Promise<bigint>;
  /**
   * A write was fenced. `epoch` is the epoch that write carried: at the epoch held now, this
   * node no longer owns the shard; an older one (a write queued before the shard was lost and
   * taken back) is ignored.
   */
  fenced(shard: ShardId, epoch: bigint): void;
  /**
   * A read answered from actor memory, begun at `epoch` (from epochFor, before asking the
   * actor), may be served: this node still owns the shard at that epoch, by its lease (cluster)
   * or by an epoch check at most EPOCH_CHECK_MS old (single node). Throws shard_unavailable, or
   * database_unavailable when ownership cannot be confirmed.
   */
  confirmRead(shard: ShardId, epoch: bigint): Promise<void>;
  info(shard: ShardId): ShardInfo | undefined;
  shards(): ShardInfo[];
  /** The shards of shards(), by id alone: what the per-request checks walk, without building an info each. */
  shardIds(): Iterable<ShardId>;
  /** The live nodes of the cluster (this node alone in single-node mode). */
  members(): MemberView[];
  /** Here, at its owner, or nowhere for now (the caller answers 503 and the client retries). */
  route(shard: ShardId): Promise<Route>;
  /** A remote route to the shard failed or was refused: the next route() looks its owner up afresh. */
  forget(shard: ShardId): void;
  /** Owned here and writable now (synchronous; for the relay and sweeper, which act only on their own shards). */
  isLocal(shard: ShardId): boolean;
}

export class SingleNodeOwnership implements Ownership {
  private readonly epochs = new Map<ShardId, Promise<bigint>>();
  private readonly known = new Map<ShardId, bigint>();
  private readonly lost = new Set<ShardId>();
  /** Shards whose epoch bump is in flight: the check must not mistake our own bump for a successor's. */
  private readonly taking = new Set<ShardId>();
  private readonly lostHandlers: ((shard: ShardId) => void)[] = [];
  private readonly epochCheck: BoundedCheck;

  constructor(private readonly pool: Pool, readonly nodeId: string, readonly region: string, private readonly logger: Logger, epochCheckMs: number) {
    this.epochCheck = new BoundedCheck(epochCheckMs, () => this.checkEpochs());
  }

  /** Who to call when a shard is lost (retire its actors). */
  bind(hooks: { lost: (shard: ShardId) => void }): void {
    this.lostHandlers.push(hooks.lost);
  }

  /** Takes every shard already in the database and this region's buckets, bumping each epoch. */
  async start(buckets: number): Promise<void> {
    const ids = new Set(await knownShards(this.pool));
    const region = parseRegion(this.region);
    if (!region) throw new Error(`not a region: ${this.region}`);
    for (let b = 0; b < buckets; b++) ids.add(makeShardId(region, b));
    for (const id of ids) await this.epochFor(id);
    this.logger.info({ shards: ids.size }, 'shards taken');
    this.epochCheck.start((err) => this.logger.warn({ err }, 'epoch check failed'));
  }

  stop(): void {
    this.epochCheck.stop();
  }

  epochFor(shard: ShardId): Promise<bigint> {
    if (this.lost.has(shard)) return Promise.reject(new GeopayError('shard_unavailable', `shard ${shard} was taken by another node`));
    let p = this.epochs.get(shard);
    if (!p) {
      p = this.take(shard);
      this.epochs.set(shard, p);
      p.catch(() => this.epochs.delete(shard));
    }
    return p;
  }

  private async take(shard: ShardId): Promise<bigint> {
    this.taking.add(shard);
    try {
      const epoch = await bumpEpoch(this.pool, shard, this.nodeId);
      this.known.set(shard, epoch);
      return epoch;
    } finally {
      this.taking.delete(shard);
    }
  }

  fenced(shard: ShardId, epoch: bigint): void {
    const known = this.known.get(shard);
    if (known === undefined || epoch < known) return;
    this.lose(shard, 'a write was fenced');
  }

  async confirmRead(shard: ShardId, epoch: bigint): Promise<void> {
    try {
      await this.epochCheck.fresh();
    } catch (err) {
      throw new GeopayError('database_unavailable', 'shard epochs could not be checked', { cause: err });
    }
    if (this.lost.has(shard) || this.known.get(shard) !== epoch) throw new GeopayError('shard_unavailable', `shard ${shard} was taken by another node`);
  }

  /** Epochs only grow, and only a taker bumps one: a stored epoch past ours means a successor. */
  private async checkEpochs(): Promise<void> {
    const stored = await shardEpochs(this.pool);
    for (const [shard, epoch] of stored) {
      const mine = this.known.get(shard);
      if (mine !== undefined && epoch > mine && !this.taking.has(shard) && !this.lost.has(shard)) this.lose(shard, 'epoch check: a newer epoch is stored');
    }
  }

  private lose(shard: ShardId, reason: string): void {
    if (this.lost.has(shard)) return;
    this.lost.add(shard);
    this.logger.error({ shard, epoch: this.known.get(shard)?.toString(), reason }, 'shard lost: another process took it');
    for (const h of this.lostHandlers) h(shard);
  }

  info(shard: ShardId): ShardInfo | undefined {
    const epoch = this.known.get(shard);
    if (epoch === undefined) return undefined;
    return { shard, owner: this.lost.has(shard) ? 'unknown' : this.nodeId, epoch, region: this.region, nodeId: this.nodeId, leaseExpiresAt: null };
  }

  shards(): ShardInfo[] {
    return [...this.known.keys()].map((s) => this.info(s)!);
  }

  shardIds(): Iterable<ShardId> {
    return this.known.keys();
  }

  isLocal(shard: ShardId): boolean {
    return !this.lost.has(shard);
  }

  members(): MemberView[] {
    return [{ nodeId: this.nodeId, region: this.region, url: '', heartbeatAgeMs: 0 }];
  }

  route(shard: ShardId): Promise<Route> {
    return Promise.resolve(this.lost.has(shard) ? { kind: 'unavailable', reason: 'taken by another process' } : { kind: 'local' });
  }

  /** Nothing is remote here. */
  forget(): void {}
}
