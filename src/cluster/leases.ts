// Shard leases: Redlock (redlock 5.0.0-beta.2, pinned) over independent Redis masters. A lease
// is valid until t0 + ttl - drift on this process's monotonic clock, t0 taken before the
// acquire/extend was sent; past that instant it is lost, whether or not a timer noticed.
// Losses are reported synchronously to onLost; the fencing epoch in PostgreSQL covers the rest.
import type { Metrics } from '../observability/metrics.ts';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import Redlock, { Lock } from 'redlock';
import { RedisMasters } from './redis-masters.ts';

export interface LeaseKeeperOptions {
  redisUrls: string[];
  nodeId: string;
  ttlMs: number;
  keyPrefix: string;
  commandTimeoutMs: number;
  logger: Logger;
  metrics?: Pick<Metrics, 'leaseOps' | 'leaseLosses' | 'redisFailures'>;
}

/** Redlock's allowance for clock drift between masters, as a fraction of the TTL (plus 2 ms). */
const DRIFT_FACTOR = 0.01;

// Redlock's own extend script only refreshes keys that still hold our value. This one also
// writes the key back on a master that lost it (restarted empty, no persistence), so a
// rolling restart of the masters does not wear every lease down to a minority. It never
// overwrites another lock's value, and runs only while our lease is valid, so it cannot
// give two nodes a majority at once.
const EXTEND_SCRIPT = `
  for i, key in ipairs(KEYS) do
    local v = redis.call("get", key)
    if v ~= false and v ~= ARGV[1] then
      return 0
    end
  end
  for i, key in ipairs(KEYS) do
    redis.call("set", key, ARGV[1], "PX", ARGV[2])
  end
  return #KEYS
`;

/**
 * redlock 5.0.0-beta.2 makes each lock's value with its private _random(), called
 * synchronously by acquire() before its first await, and has no option to choose it. We need
 * `${nodeId}:${random}` so holder() can name the owner, so we hand it the value for the call.
 * acquire() checks that the lock came back with it: an upgrade that changes this fails loudly.
 */
class ValueRedlock extends Redlock {
  private next: string | undefined;

  acquireWithValue(key: string, value: string, ttlMs: number): Promise<Lock> {
    this.next = value;
    try {
      return this.acquire([key], ttlMs);
    } finally {
      this.next = undefined;
    }
  }

  protected override _random(): string {
    assert.ok(this.next !== undefined, 'redlock asked for a lock value outside acquireWithValue');
    return this.next;
  }
}

interface Lease {
  readonly key: string;
  readonly value: string;
  lock: Lock;
  /** Monotonic instant the current grant was requested at, and the end of its validity. */
  t0: number;
  validUntil: number;
  extendTimer: NodeJS.Timeout | undefined;
  deadlineTimer: NodeJS.Timeout | undefined;
  /** The extension in flight, if any; never rejects. Release waits for it (see release()). */
  extending: Promise<void> | undefined;
}

class OperationTimeout extends Error {
  constructor(op: string, ms: number) {
    super(`${op} not answered within ${Math.round(ms)} ms`);
  }
}

const nodeOf = (value: string): string | undefined => {
  const i = value.lastIndexOf(':');
  return i > 0 ? value.slice(0, i) : undefined;
};

export class LeaseKeeper {
  /** The clients, so Membership can share them; stop() closes them. */
  readonly masters: RedisMasters;
  private readonly redlock: ValueRedlock;
  private readonly log: Logger;
  private readonly leases = new Map<string, Lease>();
  private readonly acquiring = new Map<string, Promise<boolean>>();
  /** Bumped by release(): an acquire that started before it gives its lock back. */
  private readonly generation = new Map<string, number>();
  private readonly lostCallbacks: ((shard: string, reason: string) => void)[] = [];
  private readonly driftMs: number;
  private readonly extendEveryMs: number;
  /** Bound on one acquire or release: a script may take EVALSHA + EVAL (NOSCRIPT after a restart). */
  private readonly opBoundMs: number;
  private stopped = false;

  constructor(private readonly opts: LeaseKeeperOptions) {
    assert.ok(Number.isInteger(opts.ttlMs), 'lease TTL is whole milliseconds (redlock requires it)');
    assert.ok(opts.ttlMs >= 30, 'lease TTL leaves room for drift and three extensions');
    assert.ok(/^[^:\s]+$/.test(opts.nodeId), 'node id without ":" (it prefixes the lock value)');
    this.driftMs = Math.round(opts.ttlMs * DRIFT_FACTOR) + 2;
    this.extendEveryMs = Math.floor(opts.ttlMs / 3);
    this.opBoundMs = 2 * opts.commandTimeoutMs + 50;
    this.log = opts.logger.child({ component: 'leases' });
    this.masters = new RedisMasters({ urls: opts.redisUrls, commandTimeoutMs: opts.commandTimeoutMs, logger: opts.logger });
    // retryCount 0: one round per call; the keeper (placement) decides when to try again.
    this.redlock = new ValueRedlock(this.masters.clients, { driftFactor: DRIFT_FACTOR, retryCount: 0, retryDelay: 0, retryJitter: 0 }, {
      // A function: this version silently ignores a script given as a string (its types allow one).
      extendScript: () => EXTEND_SCRIPT,
    });
  }

  /** Connects the masters, at most their connect timeout; a node starts with them down. */
  async start(): Promise<void> {
    const up = await this.masters.connect();
    if (up < this.masters.quorum) this.log.warn({ up, quorum: this.masters.quorum }, 'lease masters: no quorum at start');
  }

  onLost(cb: (shard: string, reason: string) => void): void {
    this.lostCallbacks.push(cb);
  }

  /** True when this node holds the shard now: already held, or taken on a majority within the TTL. */
  acquire(shard: string): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false);
    if (this.holds(shard)) return Promise.resolve(true);
    let p = this.acquiring.get(shard);
    if (!p) {
      p = this.tryAcquire(shard).finally(() => this.acquiring.delete(shard));
      this.acquiring.set(shard, p);
    }
    return p;
  }

  private async tryAcquire(shard: string): Promise<boolean> {
    const key = this.key(shard);
    const gen = this.generation.get(shard) ?? 0;
    const value = `${this.opts.nodeId}:${randomBytes(16).toString('hex')}`;
    const t0 = performance.now();
    const validUntil = t0 + this.opts.ttlMs - this.driftMs;
    let lock: Lock;
    try {
      // Past validUntil a grant is worthless; the bound also covers redlock waiting for a
      // quorum that an even split of votes never gives (see bounded()).
      lock = await this.bounded(this.redlock.acquireWithValue(key, value, this.opts.ttlMs), Math.min(this.opBoundMs * 2, validUntil - t0), 'acquire');
    } catch (err) {
      if (err instanceof assert.AssertionError) throw err;
      this.counted('acquire', err);
      // Redlock already removed a partial lock after a refusal; after our timeout it did not.
      if (err instanceof OperationTimeout) await this.releaseValue(key, value);
      this.log.debug({ shard, err }, 'lease not acquired');
      return false;
    }
    assert.equal(lock.value, value);
    // The known pitfall: a grant that arrives after its own validity is not a lease.
    if (performance.now() >= validUntil || this.stopped || gen !== (this.generation.get(shard) ?? 0)) {
      await this.releaseValue(key, value);
      return false;
    }
    this.counted('acquire');
    const lease: Lease = { key, value, lock, t0, validUntil, extendTimer: undefined, deadlineTimer: undefined, extending: undefined };
    this.leases.set(shard, lease);
    this.armDeadline(shard, lease);
    this.scheduleExtend(shard, lease);
    this.log.debug({ shard }, 'lease acquired');
    return true;
  }

  /** Held and valid by the monotonic clock right now. A passed deadline is reported as lost here and now. */
  holds(shard: string): boolean {
    return this.valid(shard) !== undefined;
  }

  validUntil(shard: string): number | undefined {
    return this.valid(shard)?.validUntil;
  }

  /** Wall-clock estimate of the end of validity, for inspection only. */
  expiresAt(shard: string): string | undefined {
    const lease = this.valid(shard);
    return lease && new Date(Date.now() + (lease.validUntil - performance.now())).toISOString();
  }

  held(): string[] {
    return [...this.leases.keys()].filter((s) => this.holds(s));
  }

  /** The node whose lock value a majority of all masters store for the shard, else undefined. */
  async holder(shard: string): Promise<string | undefined> {
    const key = this.key(shard);
    const values = await Promise.all(this.masters.clients.map((c) => c.get(key).catch(() => null)));
    const votes = new Map<string, number>();
    for (const v of values) if (v !== null) votes.set(v, (votes.get(v) ?? 0) + 1);
    for (const [v, n] of votes) if (n >= this.masters.quorum) return nodeOf(v);
    return undefined;
  }

  /** Gives the shard back (best effort, never throws); no onLost, the caller asked for it. */
  async release(shard: string): Promise<void> {
    this.generation.set(shard, (this.generation.get(shard) ?? 0) + 1);
    const lease = this.leases.get(shard);
    if (lease) {
      this.drop(shard, lease);
      await this.releaseLease(lease);
    }
    // An acquire in flight sees the new generation and releases what it got before settling.
    await this.acquiring.get(shard)?.catch(() => false);
  }

  /** Releases every lease, then closes the clients. */
  async stop(): Promise<void> {
    this.stopped = true;
    const shards = new Set([...this.leases.keys(), ...this.acquiring.keys()]);
    await Promise.all([...shards].map((s) => this.release(s)));
    await this.masters.close();
  }

  private key(shard: string): string {
    return `${this.opts.keyPrefix}lease:${shard}`;
  }

  /** The lease if it is still valid; otherwise it is lost now, synchronously. */
  private valid(shard: string): Lease | undefined {
    const lease = this.leases.get(shard);
    if (!lease) return undefined;
    if (performance.now() < lease.validUntil) return lease;
    this.lose(shard, lease, 'lease deadline passed');
    return undefined;
  }

  private scheduleExtend(shard: string, lease: Lease): void {
    clearTimeout(lease.extendTimer);
    const delay = Math.max(0, lease.t0 + this.extendEveryMs - performance.now());
    lease.extendTimer = setTimeout(() => this.extend(shard, lease), delay);
    lease.extendTimer.unref();
  }

  /** Fires at the deadline of the current grant: if no extension moved it, the lease is lost. */
  private armDeadline(shard: string, lease: Lease): void {
    clearTimeout(lease.deadlineTimer);
    // A timer may fire a little early against performance.now(); valid() re-arms then.
    lease.deadlineTimer = setTimeout(() => {
      if (this.leases.get(shard) === lease && this.valid(shard)) this.armDeadline(shard, lease);
    }, Math.max(0, lease.validUntil - performance.now()) + 1);
    lease.deadlineTimer.unref();
  }

  private extend(shard: string, lease: Lease): void {
    // After a pause this callback may be the first thing to run: check the deadline first.
    if (this.leases.get(shard) !== lease || !this.valid(shard)) return;
    const t0 = performance.now();
    const deadline = lease.validUntil;
    lease.extending = (async () => {
      let next: Lock;
      try {
        next = await this.bounded(this.redlock.extend(lease.lock, this.opts.ttlMs), deadline - t0, 'extend');
      } catch (err) {
        this.counted('extend', err);
        this.lose(shard, lease, `extension failed: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      this.counted('extend');
      if (this.leases.get(shard) !== lease) return; // released or lost meanwhile; that path releases the value
      if (performance.now() >= deadline) {
        this.lose(shard, lease, 'extension confirmed after the lease deadline');
        return;
      }
      lease.lock = next;
      lease.t0 = t0;
      lease.validUntil = t0 + this.opts.ttlMs - this.driftMs;
      this.armDeadline(shard, lease);
      this.scheduleExtend(shard, lease);
    })().finally(() => {
      lease.extending = undefined;
    });
  }

  /** Loss: drop it and tell every callback in this same tick; then free the keys for others. */
  private lose(shard: string, lease: Lease, reason: string): void {
    if (this.leases.get(shard) !== lease) return;
    this.drop(shard, lease);
    this.opts.metrics?.leaseLosses.inc();
    this.log.warn({ shard, reason }, 'lease lost');
    for (const cb of this.lostCallbacks) {
      try {
        cb(shard, reason);
      } catch (err) {
        this.log.error({ err, shard }, 'lease loss callback failed');
      }
    }
    void this.releaseLease(lease);
  }

  private drop(shard: string, lease: Lease): void {
    this.leases.delete(shard);
    clearTimeout(lease.extendTimer);
    clearTimeout(lease.deadlineTimer);
  }

  /**
   * After any extension in flight has settled: its EVAL (sent after a NOSCRIPT) could otherwise
   * reach a master after our release and write the key back for a whole TTL.
   */
  private async releaseLease(lease: Lease): Promise<void> {
    await lease.extending;
    await this.releaseValue(lease.key, lease.value);
  }

  /** Deletes the key on every master that still stores this value; never throws. */
  private async releaseValue(key: string, value: string): Promise<void> {
    try {
      await this.bounded(this.redlock.release(new Lock(this.redlock, [key], value, [], 0)), this.opBoundMs, 'release');
      this.counted('release');
    } catch (err) {
      this.counted('release', err);
      // No quorum (the key expired, or masters are down): it expires on its own within the TTL.
      this.log.debug({ key, err }, 'lease release not confirmed');
    }
  }

  /** One lease operation's result in the metrics; a timeout is also a failed Redis command. */
  private counted(op: 'acquire' | 'extend' | 'release', err?: unknown): void {
    const m = this.opts.metrics;
    m?.leaseOps.inc({ op, result: err === undefined ? 'ok' : 'failed' });
    if (err instanceof OperationTimeout) m?.redisFailures.inc({ client: 'leases' });
  }

  /** Masters configured and answering a PING now (bounded by the command timeout): a metric. */
  async mastersReachable(): Promise<{ configured: number; reachable: number }> {
    const up = await Promise.all(this.masters.clients.map((c) => c.ping().then(() => true, () => false)));
    return { configured: up.length, reachable: up.filter(Boolean).length };
  }

  /**
   * Every redlock call gets a bound. Besides slow masters: with an even number of masters, a
   * split vote (2 for, 2 against) never reaches either quorum and redlock's promise never settles.
   */
  private bounded<T>(op: Promise<T>, ms: number, name: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new OperationTimeout(name, ms)), Math.max(0, ms));
    });
    op.catch(() => undefined); // a late rejection after the timeout is not unhandled
    return Promise.race([op, timeout]).finally(() => clearTimeout(timer));
  }
}
