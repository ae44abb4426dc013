// Reads by id go to the database of the id's region. This node reads its home region's
// database, and another region's only while it holds shards of it (region failover). Any
// other region's read is asked of a node of that region (its live members in turn, or whoever
// holds the region's shards), which reads it in its own database. With one database for
// every region, everything is read here.
import { GeopayError } from '../domain/errors.ts';
import type { Region } from '../domain/ids.ts';
import { makeShardId, shardParts } from '../domain/ids.ts';
import type { Ownership } from '../cluster/ownership.ts';
import type { RegionRead, RegionReadArgs, RegionReadResult, RegionReader, RegionRepositories } from '../persistence/repositories.ts';
import { runRegionRead } from '../persistence/repositories.ts';

/** Carries a region read to another node (src/cluster/forward.ts). */
export interface RegionPeers {
  regionRead(url: string, region: Region, op: RegionRead, args: unknown[]): Promise<unknown>;
}

export interface RegionReadsDeps {
  home: Region;
  /** One database for every region (no REGION_DATABASE_URLS). */
  shared: boolean;
  /** The repositories of a region's database. */
  repos: (region: Region) => RegionRepositories;
  ownership: Ownership;
  peers: RegionPeers | undefined;
}

export class RegionReads {
  constructor(private readonly deps: RegionReadsDeps) {}

  /** Does this node read the region's database itself: its home, or a region whose shards it holds? */
  readsHere(region: Region): boolean {
    const { ownership } = this.deps;
    if (this.deps.shared || region === this.deps.home) return true;
    // On every read of another region: by id, not ShardInfo (ownership.shards() builds one per shard).
    for (const shard of ownership.shardIds()) if (shardParts(shard).region === region && ownership.isLocal(shard)) return true;
    return false;
  }

  /** Spreads remote reads over a region's nodes. */
  private turn = 0;

  /**
   * The RegionReader of this node's repositories. A remote read tries the region's live nodes
   * in turn: one that does not answer or answers an error (dead but not yet out of the
   * membership, frozen, its clock too far off for the signature window) costs that attempt,
   * not the read. Reads are idempotent, so asking a second node is always safe.
   */
  readonly read: RegionReader = async <K extends RegionRead>(region: Region, op: K, ...args: RegionReadArgs<K>): Promise<RegionReadResult<K>> => {
    if (this.readsHere(region)) return runRegionRead(this.deps.repos(region), op, args);
    const urls = await this.nodesOf(region);
    // Asking for the region's first shard may have given it to this node (failover placement).
    if (urls.length === 0 && this.readsHere(region)) return runRegionRead(this.deps.repos(region), op, args);
    const peers = this.deps.peers;
    if (urls.length === 0 || !peers) throw new GeopayError('region_unavailable', `no node of region ${region} can be asked`);
    let failure: unknown;
    for (const url of urls) {
      try {
        return await peers.regionRead(url, region, op, args) as RegionReadResult<K>;
      } catch (err) {
        if (!(err instanceof GeopayError && err.code === 'region_unavailable')) throw err;
        failure = err;
      }
    }
    throw failure;
  };

  /** A read a peer asked of this node: answered only from a database it reads itself, never passed on. */
  local<K extends RegionRead>(region: Region, op: K, args: RegionReadArgs<K>): Promise<RegionReadResult<K>> {
    if (!this.readsHere(region)) return Promise.reject(new GeopayError('region_unavailable', `this node does not read region ${region}`));
    return runRegionRead(this.deps.repos(region), op, args);
  }

  /** The region's live nodes, starting with the next in turn; else the node holding its first shard (a region failed over). */
  private async nodesOf(region: Region): Promise<string[]> {
    const members = this.deps.ownership.members().filter((m) => m.region === region).map((m) => m.url);
    if (members.length > 0) {
      const first = this.turn++ % members.length;
      return [...members.slice(first), ...members.slice(0, first)];
    }
    const route = await this.deps.ownership.route(makeShardId(region, 0));
    return route.kind === 'remote' ? [route.url] : [];
  }
}
