// Cluster membership through the lease masters: each node writes a heartbeat key (JSON, PX
// ttl) on every master, best effort, and reads the union of what the reachable masters hold,
// the freshest heartbeat winning. Ages come from Redis's PTTL, so no two nodes' clocks are
// ever compared. A node that stops deletes its key; one that dies disappears after its TTL.
import type { Metrics } from '../observability/metrics.ts';
import assert from 'node:assert/strict';
import type { Logger } from 'pino';
import { RedisMasters } from './redis-masters.ts';

export interface Member {
  nodeId: string;
  region: string;
  /** Where other nodes forward requests for the shards this node owns. */
  url: string;
  /** Time since its last heartbeat on the freshest master (by that master's clock). */
  heartbeatAgeMs: number;
}

export interface MembershipOptions {
  /** Shared clients (LeaseKeeper.masters), closed by their owner; or urls, closed by stop(). */
  masters?: RedisMasters;
  redisUrls?: string[];
  commandTimeoutMs?: number;
  nodeId: string;
  region: string;
  url: string;
  heartbeatMs: number;
  ttlMs: number;
  keyPrefix: string;
  logger: Logger;
  metrics?: Pick<Metrics, 'redisFailures'>;
}

// Keys: `${prefix}member:${nodeId}` (the heartbeat) and `${prefix}members` (an index, so a read
// never SCANs the keyspace the rate limiter shares). Standalone masters, not Redis Cluster:
// the read script may name keys it builds itself.
const HEARTBEAT_SCRIPT = `
  redis.call("set", KEYS[1], ARGV[2], "PX", ARGV[3])
  redis.call("sadd", KEYS[2], ARGV[1])
  return 1
`;
const READ_SCRIPT = `
  local out = {}
  for _, id in ipairs(redis.call("smembers", KEYS[1])) do
    local key = ARGV[1] .. id
    local v = redis.call("get", key)
    if v then
      out[#out + 1] = v
      out[#out + 1] = redis.call("pttl", key)
    else
      redis.call("srem", KEYS[1], id)
    end
  end
  return out
`;
const LEAVE_SCRIPT = `
  redis.call("del", KEYS[1])
  redis.call("srem", KEYS[2], ARGV[1])
  return 1
`;

interface Heartbeat { nodeId: string; region: string; url: string; ttlMs: number }

/** What another node wrote is input: anything malformed is skipped, not trusted. */
function parseHeartbeat(raw: unknown): Heartbeat | undefined {
  if (typeof raw !== 'string') return undefined;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.nodeId !== 'string' || typeof o.region !== 'string' || typeof o.url !== 'string') return undefined;
  if (typeof o.ttlMs !== 'number' || !Number.isFinite(o.ttlMs)) return undefined;
  return { nodeId: o.nodeId, region: o.region, url: o.url, ttlMs: o.ttlMs };
}

export class Membership {
  private readonly masters: RedisMasters;
  private readonly ownsMasters: boolean;
  private readonly log: Logger;
  private readonly memberKeyPrefix: string;
  private readonly indexKey: string;
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private visible = true;

  constructor(private readonly opts: MembershipOptions) {
    assert.ok(Number.isInteger(opts.ttlMs) && Number.isInteger(opts.heartbeatMs));
    assert.ok(opts.heartbeatMs > 0);
    assert.ok(opts.ttlMs > opts.heartbeatMs, 'a member outlives at least one missed heartbeat');
    this.log = opts.logger.child({ component: 'membership' });
    if (opts.masters) {
      this.masters = opts.masters;
      this.ownsMasters = false;
    } else {
      assert.ok(opts.redisUrls && opts.commandTimeoutMs !== undefined, 'masters or redisUrls + commandTimeoutMs');
      this.masters = new RedisMasters({ urls: opts.redisUrls, commandTimeoutMs: opts.commandTimeoutMs, logger: opts.logger });
      this.ownsMasters = true;
    }
    this.memberKeyPrefix = `${opts.keyPrefix}member:`;
    this.indexKey = `${opts.keyPrefix}members`;
  }

  /** Connects (bounded), writes a first heartbeat, then one every heartbeatMs. */
  async start(): Promise<void> {
    await this.masters.connect();
    await this.beat();
    this.timer = setInterval(() => {
      // One heartbeat in flight at most: a slow master does not pile them up.
      this.beating ??= this.beat().finally(() => { this.beating = undefined; });
    }, this.opts.heartbeatMs);
    this.timer.unref();
  }

  /** Stops heartbeating and deletes this node's key, so others see it leave at once. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.beating;
    const { nodeId } = this.opts;
    await Promise.all(this.masters.clients.map((c) => c.eval(LEAVE_SCRIPT, 2, this.memberKeyPrefix + nodeId, this.indexKey, nodeId).catch(() => undefined)));
    if (this.ownsMasters) await this.masters.close();
  }

  /** Every member any reachable master knows of, each with its freshest heartbeat; by node id. */
  async members(): Promise<Member[]> {
    const replies = await Promise.all(
      this.masters.clients.map((c) => (c.eval(READ_SCRIPT, 1, this.indexKey, this.memberKeyPrefix) as Promise<unknown>).catch(() => [])),
    );
    const best = new Map<string, Member>();
    for (const reply of replies) {
      if (!Array.isArray(reply)) continue;
      for (let i = 0; i + 1 < reply.length; i += 2) {
        const hb = parseHeartbeat(reply[i]);
        const pttl = reply[i + 1];
        if (!hb || typeof pttl !== 'number' || pttl < 0) continue;
        const member: Member = { nodeId: hb.nodeId, region: hb.region, url: hb.url, heartbeatAgeMs: Math.max(0, hb.ttlMs - pttl) };
        const seen = best.get(hb.nodeId);
        if (!seen || member.heartbeatAgeMs < seen.heartbeatAgeMs) best.set(hb.nodeId, member);
      }
    }
    return [...best.values()].sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  /** Members heard from within this node's TTL, optionally of one region. */
  async live(region?: string): Promise<Member[]> {
    return (await this.members()).filter((m) => m.heartbeatAgeMs < this.opts.ttlMs && (region === undefined || m.region === region));
  }

  private async beat(): Promise<void> {
    const { nodeId, region, url, ttlMs } = this.opts;
    const value = JSON.stringify({ nodeId, region, url, ttlMs } satisfies Heartbeat);
    const results = await Promise.all(
      this.masters.clients.map((c) =>
        c.eval(HEARTBEAT_SCRIPT, 2, this.memberKeyPrefix + nodeId, this.indexKey, nodeId, value, ttlMs).then(() => true, () => false),
      ),
    );
    const ok = results.filter(Boolean).length;
    if (ok < results.length) this.opts.metrics?.redisFailures.inc({ client: 'membership' }, results.length - ok);
    // Log the transitions only: a master outage would otherwise log every heartbeat.
    if (ok === 0 && this.visible) this.log.warn('heartbeat reached no Redis master');
    if (ok > 0 && !this.visible) this.log.info({ masters: ok }, 'heartbeat reaching Redis again');
    this.visible = ok > 0;
  }
}
