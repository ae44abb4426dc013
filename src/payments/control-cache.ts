// What a node read from the control database (a key's principal, a tenant's limits): trusted
// for CONTROL_CACHE_MS, then read again. When the control database cannot answer, the last value
// read keeps answering for CONTROL_OUTAGE_GRACE_MS more (stale-if-error), so payments with keys
// already seen go on through an outage; what was never read answers control_plane_unavailable.
import type { Logger } from 'pino';
import { GeopayError } from '../domain/errors.ts';

/**
 * After a failed read, how long no request waits for another: values in their grace answer at
 * once and unseen keys are refused at once, instead of each waiting for a connect timeout.
 */
export const RECHECK_AFTER_FAILURE_MS = 1_000;
/**
 * How long a request holding a value in its grace waits for the re-read before it is answered
 * from that value: a slow control database must not slow every payment down. (The re-read goes
 * on, and its answer replaces the value.) A request for a key never read waits for the read.
 */
export const REVALIDATE_WAIT_MS = 500;

export interface ControlCacheOptions {
  cacheMs: number;
  /** 0: no grace, a value past cacheMs is never used. */
  outageGraceMs: number;
  maxEntries: number;
  clock: () => number;
}

/** Whether the control database failed a read a moment ago; shared by the caches of a node, logged once per change. */
export class ControlPlaneHealth {
  private failedAt = Number.NEGATIVE_INFINITY;
  private down = false;

  constructor(private readonly logger: Logger) {}

  /** Whether the last read of the control database answered (a metric: geopay_control_plane_reachable). */
  get reachable(): boolean {
    return !this.down;
  }

  failed(at: number, err: unknown): void {
    this.failedAt = at;
    if (!this.down) this.logger.warn({ err }, 'control database unreachable: known keys answer from the cache, unseen keys and admin writes 503');
    this.down = true;
  }

  answered(): void {
    this.failedAt = Number.NEGATIVE_INFINITY;
    if (this.down) this.logger.info('control database reachable again');
    this.down = false;
  }

  recentlyFailed(now: number): boolean { return now - this.failedAt < RECHECK_AFTER_FAILURE_MS; }
}

const isOutage = (err: unknown): err is GeopayError => err instanceof GeopayError && err.code === 'control_plane_unavailable';
const TIMED_OUT = Symbol('timed out');

export class ControlCache<V> {
  /** In order of the last read, so the first entry is the one read longest ago. */
  private readonly entries = new Map<string, { value: V; readAt: number }>();
  private readonly reading = new Map<string, Promise<V>>();
  /** Bumped by forget: a read that began before it does not store what it read. */
  private generation = 0;

  constructor(
    private readonly opts: ControlCacheOptions,
    private readonly health: ControlPlaneHealth,
    /** Told of each answer given from a value past its bound (the control database out of reach). */
    private readonly onStale: () => void = () => undefined,
  ) {}

  /** The value of `key`: fresh from the cache, read again, or, while the control plane is out of reach, the last one read within its grace. */
  async get(key: string, now: number, read: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key);
    if (hit && now - hit.readAt <= this.opts.cacheMs) return hit.value;
    const usable = hit && this.opts.outageGraceMs > 0 && now - hit.readAt <= this.opts.cacheMs + this.opts.outageGraceMs ? hit : undefined;
    if (this.health.recentlyFailed(now)) {
      if (usable) return this.stale(usable.value);
      throw new GeopayError('control_plane_unavailable', 'the control database failed a read a moment ago');
    }
    const reading = this.readOnce(key, now, read);
    try {
      const value = usable ? await within(reading, REVALIDATE_WAIT_MS) : await reading;
      if (value !== TIMED_OUT) return value;
    } catch (err) {
      if (!isOutage(err) || !usable) throw err;
    }
    return this.stale(usable!.value);
  }

  private stale(value: V): V {
    this.onStale();
    return value;
  }

  /** Forgets every value `match` selects, on this node at once (a revoked key, changed limits). */
  forget(match: (key: string, value: V) => boolean): void {
    this.generation += 1;
    for (const [key, entry] of this.entries) if (match(key, entry.value)) this.entries.delete(key);
  }

  /** One read per key at a time, shared by every request that waits for it. */
  private readOnce(key: string, now: number, read: () => Promise<V>): Promise<V> {
    const pending = this.reading.get(key);
    if (pending) return pending;
    const generation = this.generation;
    const reading = read().then((value) => {
      this.health.answered();
      if (generation === this.generation) this.store(key, value, now);
      return value;
    }, (err: unknown) => {
      if (isOutage(err)) this.health.failed(this.opts.clock(), err.cause);
      throw err;
    }).finally(() => this.reading.delete(key));
    // Whoever stopped waiting (REVALIDATE_WAIT_MS) still lets the read finish; its failure is handled above.
    reading.catch(() => undefined);
    this.reading.set(key, reading);
    return reading;
  }

  private store(key: string, value: V, readAt: number): void {
    this.entries.delete(key);
    // The value read longest ago goes first: keys in use are read again every cacheMs and stay.
    if (this.entries.size >= this.opts.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { value, readAt });
  }
}

/** What `p` answers within `ms`, else TIMED_OUT (`p` goes on). */
async function within<V>(p: Promise<V>, ms: number): Promise<V | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<typeof TIMED_OUT>((resolve) => { timer = setTimeout(resolve, ms, TIMED_OUT); })]);
  } finally {
    clearTimeout(timer);
  }
}
