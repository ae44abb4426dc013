// A database per region. The node's home region is DATABASE_URL's; REGION_DATABASE_URLS names
// every region's, and is used only where this node must write another region's data: region
// failover, when it holds shards of a region with no live node of its own. Without
// REGION_DATABASE_URLS the home database serves every region (one database for the cluster,
// as before regions had their own). Each region's pools, writer and repositories are made the
// first time they are needed, and its database is migrated then, before the first write.
// A region has two pools: the writer's, where only the group commits run, planned generically
// (db.ts), and the other, for every other query; with a pool of one connection (PGlite, or
// PG_POOL_MAX=1) the writer shares it.
import type { Logger } from 'pino';
import { GeopayError } from '../domain/errors.ts';
import type { Region } from '../domain/ids.ts';
import type { Pool } from './db.ts';
import { createPool, migrate } from './db.ts';
import { pinShardBuckets, shardMapRefusal } from './shard-map.ts';

export interface RegionDatabasesOptions {
  home: { region: Region; pool: Pool; url: string };
  /** REGION_DATABASE_URLS; empty: the home database is every region's. */
  urls: ReadonlyMap<Region, string>;
  /** Size of another region's pool (failover only), as the home pool's. */
  poolMax: number;
  /** Size of each region's writer pool (the home one's too); 0: the writer shares the region's pool. */
  writerPoolMax: number;
  statementTimeoutMs: number;
  shardBuckets: number;
  logger: Logger;
}

/** A region's pools: `writer` carries the group commits alone (it is `main` when not dedicated). */
export interface RegionPools { main: Pool; writer: Pool }

/** What this node keeps per region database it uses; `T` is made from its pools once (a writer, repositories). */
export class RegionDatabases<T> {
  private readonly pools = new Map<Region, Pool>();
  /** By URL: two regions named with one database share its writer pool, as they share its pool. */
  private readonly writerPools = new Map<string, Pool>();
  private readonly ready = new Map<Region, Promise<void>>();
  private readonly parts = new Map<Region, T>();

  constructor(private readonly opts: RegionDatabasesOptions, private readonly make: (pools: RegionPools, region: Region) => T) {
    this.pools.set(opts.home.region, opts.home.pool);
    // The home database was migrated and its shard map pinned before this was made.
    this.ready.set(opts.home.region, Promise.resolve());
  }

  get home(): Region {
    return this.opts.home.region;
  }

  /** One database for every region: nothing is another region's to read or write. */
  get shared(): boolean {
    return this.opts.urls.size === 0;
  }

  /** The regions REGION_DATABASE_URLS names, and the home region. */
  regions(): Region[] {
    return [...new Set([this.home, ...this.opts.urls.keys()])];
  }

  /** The region's pool; region_unavailable when this node has no URL for it. */
  pool(region: Region): Pool {
    if (this.shared) return this.opts.home.pool;
    let pool = this.pools.get(region);
    if (pool) return pool;
    const url = this.urlOf(region);
    if (url === this.opts.home.url) return this.opts.home.pool;
    pool = createPool({ connectionString: url, max: this.opts.poolMax, statementTimeoutMs: this.opts.statementTimeoutMs, logger: this.opts.logger.child({ database: region }) });
    this.pools.set(region, pool);
    return pool;
  }

  /** The pool the region's writer commits on; the region's pool itself when writers do not get their own. */
  writerPool(region: Region): Pool {
    const key = this.shared ? this.home : region;
    if (this.opts.writerPoolMax === 0) return this.pool(key);
    const url = key === this.home ? this.opts.home.url : this.urlOf(key);
    let pool = this.writerPools.get(url);
    if (pool) return pool;
    pool = createPool({
      connectionString: url, max: this.opts.writerPoolMax, statementTimeoutMs: this.opts.statementTimeoutMs,
      logger: this.opts.logger.child({ database: key, pool: 'writer' }), planning: 'generic',
    });
    this.writerPools.set(url, pool);
    return pool;
  }

  private urlOf(region: Region): string {
    const url = this.opts.urls.get(region);
    if (url === undefined) throw new GeopayError('region_unavailable', `no database of region ${region} is configured here (REGION_DATABASE_URLS)`);
    return url;
  }

  /** The region's writer or repositories, made once. */
  of(region: Region): T {
    const key = this.shared ? this.home : region;
    let t = this.parts.get(key);
    if (t === undefined) {
      t = this.make({ main: this.pool(region), writer: this.writerPool(region) }, key);
      this.parts.set(key, t);
    }
    return t;
  }

  /** Every region's parts made so far, the home region's first. */
  all(): { region: Region; parts: T }[] {
    return [...this.parts].map(([region, parts]) => ({ region, parts }));
  }

  /**
   * Resolves once the region's database is migrated and agrees on the shard map: before this
   * node's first write there. A failure is not kept: the next call tries again.
   */
  prepare(region: Region): Promise<void> {
    const key = this.shared ? this.home : region;
    let p = this.ready.get(key);
    if (p) return p;
    const pool = this.pool(region);
    const log = this.opts.logger.child({ database: region });
    p = (async () => {
      await migrate(pool, log);
      const map = await pinShardBuckets(pool, this.opts.shardBuckets);
      // Not this node's to repair: it must not write there under another hashing.
      if (map.kind === 'disagrees') throw new GeopayError('region_unavailable', `region ${region}: ${shardMapRefusal(this.opts.shardBuckets, map)}`);
    })();
    this.ready.set(key, p);
    p.catch(() => { if (this.ready.get(key) === p) this.ready.delete(key); });
    return p;
  }

  /** Ends the pools of other regions' databases and every writer pool (the home pool is its owner's to end). */
  async close(): Promise<void> {
    const pools = new Set([...this.pools.values(), ...this.writerPools.values()]);
    pools.delete(this.opts.home.pool);
    await Promise.all([...pools].map((p) => p.end().catch(() => undefined)));
  }

  /** Connections of the home database's pools together (the pool gauges of the metrics). */
  homeConnections(): { total: number; idle: number; waiting: number } {
    const pools = new Set([this.opts.home.pool, this.writerPools.get(this.opts.home.url) ?? this.opts.home.pool]);
    const sum = (f: (p: Pool) => number) => [...pools].reduce((n, p) => n + f(p), 0);
    return { total: sum((p) => p.totalCount), idle: sum((p) => p.idleCount), waiting: sum((p) => p.waitingCount) };
  }
}
