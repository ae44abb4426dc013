// The shared rate-limit counter in Redis, taken in leases instead of one round trip per
// request. A node reserves a run of a window's budget at once (INCRBY) and admits requests
// from it locally; the budget reserved by all nodes together never passes the limit, so no
// window admits more than its limit across the cluster. The price is the other way: a run one
// node reserved and did not use is lost to the others for that window. Runs start at one
// request and double while the node keeps using them, up to 1/64 of the limit, so a quiet
// node reserves about what it uses and a small limit (below 128/s) is counted request by
// request, exactly as before. A busy node makes a few round trips per window instead of one
// per request.
import type { FastifyRateLimitStore } from '@fastify/rate-limit';
import type { Redis } from 'ioredis';

/** The largest run a node reserves: this share of the window's limit. */
const MAX_RUN_SHARE = 64;
/** Keys (tenant and route class) whose lease a node keeps. */
const MAX_LEASES = 20_000;

// INCRBY the key by the run asked for; a new key (the window's first reservation) expires with
// the window. Answers the total reserved in the window, and its time left.
const RESERVE = `
  local total = redis.call('INCRBY', KEYS[1], ARGV[1])
  if total == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  return {total, ttl}
`;

type Answer = (err: Error | null, res?: { current: number; ttl: number }) => void;

/** One key's window as this node holds it. */
interface Lease {
  /** Monotonic instant the window ends, as Redis's TTL said. */
  endsAt: number;
  /** The next position this node admits, and the first past its reserved runs. */
  next: number;
  end: number;
  /** Positions admitted in this window: the next run is about this large. */
  used: number;
  /**
   * Total reserved in the window when last asked, and the limit then: once the total reaches
   * the limit the whole budget is reserved, and every further request is refused until the
   * window ends (what a refusal reports).
   */
  total: number;
  max: number;
}

interface Waiter { answer: Answer; max: number }

type ReservingRedis = Redis & { geopayReserve(key: string, run: number, windowMs: number, cb: (err: Error | null, res?: [number, number]) => void): void };

/** A store class for @fastify/rate-limit (its `store` option, which it constructs), over `redis`, keys under `prefix`. */
export function leasedRedisStore(redis: Redis, prefix: string): new () => FastifyRateLimitStore {
  const client = redis as ReservingRedis;
  if (typeof (client as Partial<ReservingRedis>).geopayReserve !== 'function') redis.defineCommand('geopayReserve', { numberOfKeys: 1, lua: RESERVE });
  return class extends LeasedRedisStore {
    constructor() {
      super(client, prefix);
    }
  };
}

class LeasedRedisStore implements FastifyRateLimitStore {
  constructor(private readonly client: ReservingRedis, private readonly prefix: string) {}

  private readonly leases = new Map<string, Lease>();
  /** Requests waiting for a reservation of their key in flight. */
  private readonly waiting = new Map<string, Waiter[]>();

  incr(key: string, answer: Answer, timeWindow: number, max: number): void {
    const now = performance.now();
    const queue = this.waiting.get(key);
    if (queue) {
      queue.push({ answer, max });
      return;
    }
    // A lease of a window gone only sizes the next run, as the use it saw.
    const lease = this.leases.get(key);
    if (lease && lease.endsAt > now && this.admit(lease, answer, now)) return;
    this.waiting.set(key, [{ answer, max }]);
    this.reserve(key, lease, timeWindow, max);
  }

  child(): FastifyRateLimitStore {
    return this;
  }

  /** Answers from the lease: admitted from its run, or refused once the window is spent. False: a new run is needed. */
  private admit(lease: Lease, answer: Answer, now: number): boolean {
    const ttl = Math.max(0, Math.ceil(lease.endsAt - now));
    if (lease.next < lease.end) {
      lease.used += 1;
      answer(null, { current: lease.next++, ttl });
      return true;
    }
    if (lease.total < lease.max) return false;
    // Past the limit, whatever Redis's total: every position up to it is someone's.
    answer(null, { current: Math.max(lease.total, lease.max + 1), ttl });
    return true;
  }

  private reserve(key: string, held: Lease | undefined, timeWindow: number, max: number): void {
    const cap = Math.max(1, Math.floor(max / MAX_RUN_SHARE));
    const run = Math.min(cap, Math.max(1, held?.used ?? 0, this.waiting.get(key)!.length));
    this.client.geopayReserve(`${this.prefix}${key}`, run, timeWindow, (err, res) => {
      const waiters = this.waiting.get(key)!;
      this.waiting.delete(key);
      if (err || !res) {
        for (const w of waiters) w.answer(err ?? new Error('no answer from Redis'));
        return;
      }
      const [total, ttl] = res;
      const now = performance.now();
      // Positions first - last of this run; only those within the limit are ours.
      const first = total - run + 1;
      const last = Math.min(total, max);
      // The window's first reservation (the key was new) starts a new window here too.
      const lease: Lease = held && held.endsAt > now && total !== run
        ? { ...held, next: first, end: last + 1, total, max }
        : { endsAt: now + ttl, next: first, end: last + 1, used: 0, total, max };
      this.keep(key, lease, now);
      this.serve(key, lease, waiters, timeWindow);
    });
  }

  /** Remembers the lease; past MAX_LEASES keys, those whose window is gone are forgotten first, then the oldest. */
  private keep(key: string, lease: Lease, now: number): void {
    this.leases.delete(key);
    this.leases.set(key, lease);
    if (this.leases.size <= MAX_LEASES) return;
    for (const [k, l] of this.leases) if (l.endsAt <= now) this.leases.delete(k);
    for (const k of this.leases.keys()) {
      if (this.leases.size <= MAX_LEASES) break;
      this.leases.delete(k);
    }
  }

  /** Admits the waiters from the lease in turn; those left over wait for the next run. */
  private serve(key: string, lease: Lease, waiters: Waiter[], timeWindow: number): void {
    const now = performance.now();
    for (let i = 0; i < waiters.length; i++) {
      if (this.admit(lease, waiters[i]!.answer, now)) continue;
      this.waiting.set(key, waiters.slice(i));
      this.reserve(key, lease, timeWindow, waiters[i]!.max);
      return;
    }
  }
}
