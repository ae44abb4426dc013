// Shard ownership across nodes and regions. A node owns a shard while it holds the shard's
// Redlock lease (LeaseKeeper) AND has bumped the shard's fencing epoch in PostgreSQL after
// taking it; every journal write checks that epoch, so a paused or partitioned ex-owner can
// never write. Shards are placed evenly over the live nodes of their region (balanced
// rendezvous hashing); a region with no live node for the grace time fails over to the
// others when allowed. Leaving shards are handed over: drain, snapshot, release.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { GeopayError } from '../domain/errors.ts';
import type { MemberView, Ownership, Route, ShardInfo } from './ownership.ts';
import type { Region, ShardId } from '../domain/ids.ts';
import { makeShardId, parseRegion, parseShardId, shardParts } from '../domain/ids.ts';
import type { LeaseKeeper } from './leases.ts';
import type { Member, Membership } from './membership.ts';

export interface ClusterOwnershipOptions {
  nodeId: string;
  region: string;
  regions: string[];
  buckets: number;
  failover: 'allow' | 'deny';
  failoverGraceMs: number;
  rebalanceMs: number;
  handOverTimeoutMs: number;
}

interface Owned { epoch: bigint; takenAt: string }

/**
 * How long a lease holder read from the masters routes this node's forwards; none found, how
 * soon it asks again. A quorum read is a GET on every master, and with 2 s every node asked
 * again for each shard it forwards to every 2 s: in bench:cluster's 3 regions x 2 nodes, 3% of
 * a node's busy time (node --cpu-prof). A hint gone stale costs little: a holder that died
 * fails the forward, which forgets the hint at once, and one that handed the shard over
 * forwards the request on (a second hop) until the hint expires.
 */
const HOLDER_TTL_MS = 10_000;
const NO_HOLDER_TTL_MS = 250;

const score = (shard: ShardId, node: string): string => createHash('sha256').update(`${shard}|${node}`).digest('hex');

/** Balanced rendezvous: each shard goes to its best-ranked node that still has room. */
export function place(shards: ShardId[], nodes: string[]): Map<ShardId, string> {
  const out = new Map<ShardId, string>();
  if (nodes.length === 0) return out;
  const cap = Math.ceil(shards.length / nodes.length);
  const load = new Map(nodes.map((n) => [n, 0]));
  for (const shard of shards) {
    const ranked = [...nodes].sort((a, b) => (score(shard, b) < score(shard, a) ? -1 : 1));
    const node = ranked.find((n) => load.get(n)! < cap) ?? ranked[0]!;
    load.set(node, load.get(node)! + 1);
    out.set(shard, node);
  }
  return out;
}

export class ClusterOwnership implements Ownership {
  readonly nodeId: string;
  readonly region: string;
  private readonly owned = new Map<ShardId, Owned>();
  private readonly taking = new Map<ShardId, Promise<boolean>>();
  private readonly draining = new Set<ShardId>();
  private readonly holderCache = new Map<ShardId, { holder: string | undefined; until: number }>();
  private readonly holderReads = new Map<ShardId, Promise<string | undefined>>();
  private desired = new Map<ShardId, string>();
  private liveMembers = new Map<string, Member>();
  private readonly regionLastLive = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private rebalancing = false;
  private stopped = false;
  private lostHandlers: ((shard: ShardId) => void)[] = [];
  private drainShard: (shard: ShardId) => Promise<void> = async () => undefined;

  constructor(
    /** Takes the shard's next epoch in its region's database (src/persistence/shards.ts bumpEpoch). */
    private readonly bumpEpoch: (shard: ShardId, nodeId: string) => Promise<bigint>,
    private readonly leases: LeaseKeeper,
    private readonly opts: ClusterOwnershipOptions,
    private readonly logger: Logger,
  ) {
    this.nodeId = opts.nodeId;
    this.region = opts.region;
    this.leases.onLost((resource, reason) => {
      const shard = parseShardId(resource);
      if (shard) this.lost(shard, reason);
    });
  }

  /** Who to call when a shard is lost (retire its actors) or handed over (drain them). */
  bind(hooks: { lost: (shard: ShardId) => void; drain: (shard: ShardId) => Promise<void> }): void {
    this.lostHandlers.push(hooks.lost);
    this.drainShard = hooks.drain;
  }

  allShards(): ShardId[] {
    return this.opts.regions.flatMap((r) => this.shardsOf(r));
  }

  private shardsOf(raw: string): ShardId[] {
    const region: Region | undefined = parseRegion(raw);
    if (!region) throw new Error(`not a region: ${raw}`);
    return Array.from({ length: this.opts.buckets }, (_, b) => makeShardId(region, b));
  }

  private membership!: Membership;

  /** Membership starts once the node listens (its URL is known then). */
  async start(membership: Membership): Promise<void> {
    this.membership = membership;
    await this.rebalance();
    this.timer = setInterval(() => void this.rebalance(), this.opts.rebalanceMs);
    this.timer.unref();
  }

  /** One placement round: take what is ours and free, hand over what is no longer ours. */
  async rebalance(): Promise<void> {
    if (this.rebalancing || this.stopped) return;
    this.rebalancing = true;
    try {
      const live = await this.membership.members();
      this.liveMembers = new Map(live.map((m) => [m.nodeId, m]));
      const now = performance.now();
      const byRegion = new Map<string, string[]>();
      for (const m of live) {
        byRegion.set(m.region, [...(byRegion.get(m.region) ?? []), m.nodeId]);
        this.regionLastLive.set(m.region, now);
      }
      if (!this.liveMembers.has(this.nodeId)) {
        // Our own heartbeat is not visible (Redis majority down): place nothing new.
        return;
      }
      const desired = new Map<ShardId, string>();
      for (const region of this.opts.regions) {
        const shards = this.shardsOf(region);
        let nodes = (byRegion.get(region) ?? []).sort();
        if (nodes.length === 0 && this.opts.failover === 'allow') {
          const last = this.regionLastLive.get(region);
          // A region never seen live counts from our start, so a cold cluster does not fail over at once.
          if (last === undefined) this.regionLastLive.set(region, now);
          else if (now - last >= this.opts.failoverGraceMs) nodes = live.map((m) => m.nodeId).sort();
        }
        for (const [s, n] of place(shards, nodes)) desired.set(s, n);
      }
      this.desired = desired;
      const mine = [...desired].filter(([, n]) => n === this.nodeId).map(([s]) => s);
      for (const shard of mine) {
        if (this.stopped) return;
        if (!this.owned.has(shard)) await this.take(shard);
      }
      for (const shard of [...this.owned.keys()]) {
        const want = desired.get(shard);
        if (want !== this.nodeId && want !== undefined && this.liveMembers.has(want)) await this.handOver(shard);
      }
    } catch (err) {
      this.logger.warn({ err }, 'rebalance failed');
    } finally {
      this.rebalancing = false;
    }
  }

  /** Lease first, then the epoch bump: its row lock waits for any write of the old owner. */
  private take(shard: ShardId): Promise<boolean> {
    let p = this.taking.get(shard);
    if (p) return p;
    p = (async () => {
      try {
        if (!(await this.leases.acquire(shard))) return false;
        const epoch = await this.bumpEpoch(shard, this.nodeId);
        if (!this.leases.holds(shard)) return false; // lost while bumping: the next owner bumps again
        this.owned.set(shard, { epoch, takenAt: new Date().toISOString() });
        this.forget(shard);
        this.logger.info({ shard, epoch: epoch.toString() }, 'shard taken');
        return true;
      } catch (err) {
        this.logger.warn({ err, shard }, 'taking shard failed');
        await this.leases.release(shard);
        return false;
      } finally {
        this.taking.delete(shard);
      }
    })();
    this.taking.set(shard, p);
    return p;
  }

  /** Graceful hand-over: stop intake, drain mailboxes, snapshot, then release the lease. */
  private async handOver(shard: ShardId): Promise<void> {
    this.draining.add(shard);
    try {
      await Promise.race([this.drainShard(shard), new Promise((r) => setTimeout(r, this.opts.handOverTimeoutMs))]);
      this.owned.delete(shard);
      await this.leases.release(shard);
      this.logger.info({ shard }, 'shard handed over');
    } finally {
      this.draining.delete(shard);
    }
  }

  private lost(shard: ShardId, reason: string): void {
    if (!this.owned.delete(shard)) return;
    this.logger.warn({ shard, reason }, 'shard lease lost; its actors stop');
    for (const h of this.lostHandlers) h(shard);
  }

  async epochFor(shard: ShardId): Promise<bigint> {
    const o = this.owned.get(shard);
    // Valid by the monotonic clock right now, or no write starts.
    if (!o || !this.leases.holds(shard)) {
      if (o) this.lost(shard, 'lease expired');
      throw new GeopayError('shard_unavailable', `shard ${shard} is not owned by this node`);
    }
    return o.epoch;
  }

  fenced(shard: ShardId, epoch: bigint): void {
    const o = this.owned.get(shard);
    // A write of an older epoch than ours (queued before the shard was lost and taken back
    // here) was fenced by our own take: no news, and dropping the shard would make it flap.
    if (o && epoch >= o.epoch) {
      this.owned.delete(shard);
      void this.leases.release(shard);
      this.logger.error({ shard, epoch: epoch.toString() }, 'shard fenced: a newer owner wrote it');
      for (const h of this.lostHandlers) h(shard);
    }
  }

  /** Still held now, by the monotonic clock, under the same take: a lease lost and re-taken meanwhile has a new epoch. */
  async confirmRead(shard: ShardId, epoch: bigint): Promise<void> {
    const o = this.owned.get(shard);
    if (!o || o.epoch !== epoch || !this.leases.holds(shard)) throw new GeopayError('shard_unavailable', `shard ${shard} lost its lease during the read`);
  }

  info(shard: ShardId): ShardInfo | undefined {
    const o = this.owned.get(shard);
    if (!o) return undefined;
    return { shard, owner: this.nodeId, epoch: o.epoch, region: shardParts(shard).region, nodeId: this.nodeId, leaseExpiresAt: this.leases.expiresAt(shard) ?? null };
  }

  shards(): ShardInfo[] {
    return [...this.owned.keys()].flatMap((s) => this.info(s) ?? []);
  }

  shardIds(): Iterable<ShardId> {
    return this.owned.keys();
  }

  isLocal(shard: ShardId): boolean {
    return this.owned.has(shard) && !this.draining.has(shard) && this.leases.holds(shard);
  }

  /** Shards of every region that the last placement round gave to no live node (none before the first round). */
  unplaced(): number {
    if (this.desired.size === 0 && this.liveMembers.size === 0) return 0;
    return this.opts.regions.reduce((n, region) => n + this.shardsOf(region).length, 0) - this.desired.size;
  }

  members(): MemberView[] {
    return [...this.liveMembers.values()].map((m) => ({ nodeId: m.nodeId, region: m.region, url: m.url, heartbeatAgeMs: m.heartbeatAgeMs }));
  }

  async route(shard: ShardId): Promise<Route> {
    if (this.draining.has(shard)) return { kind: 'unavailable', reason: 'shard handing over' };
    if (this.owned.has(shard)) {
      if (this.leases.holds(shard)) return { kind: 'local' };
      this.lost(shard, 'lease expired');
      return { kind: 'unavailable', reason: 'lease expired' };
    }
    const holder = await this.holderOf(shard);
    if (holder === this.nodeId) return { kind: 'unavailable', reason: 'shard being taken' };
    if (holder) {
      const m = this.liveMembers.get(holder);
      if (m) return { kind: 'remote', url: m.url, nodeId: holder };
      this.forget(shard);
      return { kind: 'unavailable', reason: `owner ${holder} is not live` };
    }
    // Nobody holds it: its placed owner takes it on the first request.
    const want = this.desired.get(shard);
    if (want === this.nodeId || (want === undefined && shardParts(shard).region === this.region)) {
      return (await this.take(shard)) ? { kind: 'local' } : { kind: 'unavailable', reason: 'shard could not be taken' };
    }
    const m = want ? this.liveMembers.get(want) : undefined;
    return m ? { kind: 'remote', url: m.url, nodeId: m.nodeId } : { kind: 'unavailable', reason: 'no live node may own this shard' };
  }

  /**
   * Who holds the shard's lease, as the masters said within HOLDER_TTL_MS (a quorum read is a
   * GET on every master): a hint, never a fence. A node forwarded to that owns the shard no
   * more forwards on or answers shard_unavailable, and forget() drops the hint at once.
   * Lookups of one shard share the read in flight.
   */
  private holderOf(shard: ShardId): Promise<string | undefined> {
    const now = performance.now();
    const hit = this.holderCache.get(shard);
    if (hit && hit.until > now) return Promise.resolve(hit.holder);
    const reading = this.holderReads.get(shard);
    if (reading) return reading;
    const read = this.leases.holder(shard).then((holder) => {
      // None holds it: someone is about to take it, so ask again soon.
      if (this.holderReads.get(shard) === read) this.holderCache.set(shard, { holder, until: performance.now() + (holder ? HOLDER_TTL_MS : NO_HOLDER_TTL_MS) });
      return holder;
    }).finally(() => {
      if (this.holderReads.get(shard) === read) this.holderReads.delete(shard);
    });
    this.holderReads.set(shard, read);
    return read;
  }

  /** A forward to the shard's owner failed or was refused: the next route asks the masters again. */
  forget(shard: ShardId): void {
    this.holderCache.delete(shard);
    this.holderReads.delete(shard);
  }

  /** Shutdown, after the actors drained: give every lease back so others take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const shard of [...this.owned.keys()]) {
      this.owned.delete(shard);
      await this.leases.release(shard);
    }
  }
}
