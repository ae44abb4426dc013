// The chaos run's load: open loop (a write is due every 1/rate s whatever the cluster does, so
// an outage cannot slow the arrivals and hide itself), seeded, and mixed like a payment
// system's traffic: domestic and cross-region transfers, a hot account, holds then their
// capture, refunds of earlier transfers, and replays of earlier Idempotency-Keys with the same
// bytes. A client retries what the API says is safe to retry (no answer, 503, 409 in progress)
// with the same key, on another node of the account's region, until a deadline; every attempt
// goes to the request log the checker reads. Replays must answer what the first request was told.
import { setTimeout as sleep } from 'node:timers/promises';
import { codeOf, type PostResult } from '../../bench/lib/client.ts';
import { Prng } from '../../bench/lib/prng.ts';
import type { ClusterNode } from '../../test/helpers/cluster.ts';
import type { Bucket } from './types.ts';
import { REGIONS, regionOf, type World } from './world.ts';

export interface LoadSpec {
  /** Writes per second, open loop. */
  rate: number;
  seed: number;
  /** The request log's phase label (the fault's id). */
  phase: string;
  /** A client gives up on a write this long after its first attempt. */
  deadlineMs: number;
}

interface Write {
  op: string;
  path: string;
  body: Record<string, unknown> | undefined;
  key: string;
  /** The account the write takes money from: its region and shard decide who must be up. */
  debits: string;
  /** For a replay: what the first request ended with. */
  replayOf?: Final;
}

/** How a write ended, after the retries: its last answer. */
interface Final {
  status: number | null;
  /** The transfer or hold id of a 2xx, the code of a 4xx. */
  id: string | undefined;
  code: string | undefined;
}

interface Attempt {
  /** Seconds from the load's start to the answer (or the give-up). */
  t: number;
  region: string;
  account: string;
  ok: boolean;
}

export interface LoadResult {
  sent: number;
  acknowledged: number;
  refused: number;
  unavailable: number;
  rateLimited: number;
  other: number;
  replays: number;
  replayMismatches: string[];
  refusedCodes: Record<string, number>;
  attemptErrors: Record<string, number>;
  /** Acknowledged writes' latency, first attempt to the answer, retries included (null: none). */
  p50Ms: number | null;
  p99Ms: number | null;
  seconds: number;
}

const RETRY_BASE_MS = 100;
const RETRY_MAX_MS = 1_000;
/** Finished writes kept for replays and refunds (the newest). */
const KEEP = 2_000;

const retryable = (r: PostResult): boolean =>
  r.status === null || r.status === 503 || (r.status === 409 && codeOf(r.answer) === 'idempotency_key_in_progress');

export class ChaosLoad {
  private readonly rng: Prng;
  private readonly t0 = performance.now();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly attempts: Attempt[] = [];
  private readonly finished: Write[] = [];
  private readonly finals = new Map<string, Final>();
  /** Transfers answered 201 (settled), for refunds. */
  private readonly settled: { id: string; destination: string }[] = [];
  private readonly counts = { sent: 0, acknowledged: 0, refused: 0, unavailable: 0, rateLimited: 0, other: 0, replays: 0 };
  private readonly mismatches: string[] = [];
  private readonly refusedCodes: Record<string, number> = {};
  private readonly attemptErrors: Record<string, number> = {};
  private readonly latencies: number[] = [];
  private stopping = false;
  private loop: Promise<void> | undefined;
  private endS = 0;
  private n = 0;

  constructor(private readonly world: World, private readonly spec: LoadSpec) {
    this.rng = new Prng(spec.seed);
  }

  /** Seconds since the load started. */
  now(): number {
    return (performance.now() - this.t0) / 1000;
  }

  start(): void {
    this.loop = this.schedule();
  }

  /** Stops sending new writes and waits for those in flight to end (bounded by their deadline). */
  async stop(): Promise<LoadResult> {
    this.stopping = true;
    await this.loop;
    this.endS = this.now();
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
    const sorted = [...this.latencies].sort((a, b) => a - b);
    // Nearest rank: the smallest latency at or above which lie p of the writes.
    const rank = (p: number): number | null => (sorted.length === 0 ? null : Math.round(sorted[Math.ceil(p * sorted.length) - 1]!));
    return {
      ...this.counts, replayMismatches: this.mismatches, refusedCodes: this.refusedCodes, attemptErrors: this.attemptErrors,
      p50Ms: rank(0.5), p99Ms: rank(0.99), seconds: this.endS,
    };
  }

  private async schedule(): Promise<void> {
    const every = 1000 / this.spec.rate;
    for (let i = 0; !this.stopping; i++) {
      const due = this.t0 + i * every;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      if (this.stopping) break;
      const p = this.run(this.next()).finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    }
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[this.rng.int(xs.length)]!;
  }

  private account(region: string): string {
    return this.pick(this.world.accounts[region]!);
  }

  private key(): string {
    return `${this.spec.phase}-${this.spec.seed}-${this.n++}`;
  }

  private transfer(source: string, destination: string): Write {
    const amount = String(this.rng.between(1, 100));
    return { op: 'transfer', path: '/v1/transfers', key: this.key(), debits: source, body: { sourceAccountId: source, destinationAccountId: destination, amount, currency: 'USD' } };
  }

  /** The next write of the mix. */
  private next(): Write {
    const r = this.rng.next();
    const region = this.pick(REGIONS);
    if (r < 0.3) {
      const src = this.account(region);
      let dst = this.account(region);
      while (dst === src) dst = this.account(region);
      return this.transfer(src, dst);
    }
    if (r < 0.55) return this.transfer(this.account(region), this.account(this.pick(REGIONS.filter((x) => x !== region))));
    if (r < 0.65) return this.transfer(this.account(region), this.world.hot);
    if (r < 0.75) {
      const src = this.account(region);
      let dst = this.account(this.pick(REGIONS));
      while (dst === src) dst = this.account(region);
      const body = { sourceAccountId: src, destinationAccountId: dst, amount: String(this.rng.between(10, 100)), currency: 'USD', expiresInSeconds: 600 };
      return { op: 'hold', path: '/v1/holds', key: this.key(), debits: src, body };
    }
    if (r < 0.82 && this.settled.length > 0) {
      const t = this.pick(this.settled);
      return { op: 'refund', path: `/v1/transfers/${t.id}/refunds`, key: this.key(), debits: t.destination, body: { amount: '1' } };
    }
    if (this.finished.length > 0) {
      const w = this.pick(this.finished);
      return { ...w, replayOf: this.finals.get(w.key)! };
    }
    return this.transfer(this.account(region), this.account(region === 'eu' ? 'us' : 'eu'));
  }

  /** Sends a write (retries included), counts how it ended, and makes its follow-up (a hold's capture). */
  private async run(w: Write): Promise<void> {
    this.counts.sent++;
    if (w.replayOf) this.counts.replays++;
    const t0 = performance.now();
    const final = await this.send(w);
    if (final.status !== null && final.status >= 200 && final.status < 300) this.latencies.push(performance.now() - t0);
    this.count(final);
    if (w.replayOf) this.compare(w, final);
    else this.remember(w, final);
    if (w.op === 'hold' && !w.replayOf && final.status === 201 && final.id && !this.stopping) {
      const amount = this.rng.next() < 0.5 ? {} : { amount: String(this.rng.between(1, Number(w.body!.amount))) };
      await this.run({ op: 'capture', path: `/v1/holds/${final.id}/capture`, key: this.key(), debits: w.debits, body: amount });
    }
  }

  private async send(w: Write): Promise<Final> {
    const deadline = performance.now() + this.spec.deadlineMs;
    const region = regionOf(w.debits);
    const tenant = this.world.tenant;
    for (let attempt = 1; ; attempt++) {
      // A client reaches a live node of the account's region (a dead one is out of its DNS);
      // a frozen one it cannot tell from a slow one, and waits for it up to its timeout.
      const inRegion: ClusterNode[] = this.world.running.cluster.live(region);
      const targets = inRegion.length > 0 ? inRegion : this.world.running.cluster.live();
      if (targets.length === 0) {
        // No node runs at all (the world is being stopped): nothing to send it to.
        if (performance.now() >= deadline || this.stopping) return { status: null, id: undefined, code: 'no_node' };
        await sleep(RETRY_MAX_MS);
        continue;
      }
      const node = this.pick(targets);
      const r = await this.world.client(node).post({ op: w.op, path: w.path, body: w.body, key: w.key, bearer: tenant.key, tenant: tenant.id, phase: this.spec.phase }, undefined, 0);
      const ok = r.status !== null && r.status >= 200 && r.status < 300;
      this.attempts.push({ t: this.now(), region, account: w.debits, ok });
      if (!ok && r.status !== 422) {
        const what = r.status === null ? `none ${r.outcome.kind === 'error' ? r.outcome.code : ''}` : `${r.status} ${codeOf(r.answer) ?? ''}`;
        this.attemptErrors[what.trim()] = (this.attemptErrors[what.trim()] ?? 0) + 1;
      }
      if (!retryable(r) || performance.now() >= deadline) return finalOf(r);
      await sleep(Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(attempt - 1, 4)));
    }
  }

  private count(f: Final): void {
    const s = f.status;
    if (s !== null && s >= 200 && s < 300) this.counts.acknowledged++;
    else if (s === 422) {
      this.counts.refused++;
      this.refusedCodes[f.code ?? '422'] = (this.refusedCodes[f.code ?? '422'] ?? 0) + 1;
    }
    else if (s === 429) this.counts.rateLimited++;
    else if (s === null || s === 503) this.counts.unavailable++;
    else this.counts.other++;
  }

  /** A write that was decided (2xx or 422) can be replayed; a settled transfer can be refunded. */
  private remember(w: Write, f: Final): void {
    const decided = f.status !== null && ((f.status >= 200 && f.status < 300) || f.status === 422);
    if (!decided) return;
    this.finals.set(w.key, f);
    this.finished.push(w);
    if (this.finished.length > KEEP) this.finals.delete(this.finished.shift()!.key);
    if (w.op === 'transfer' && f.status === 201 && f.id) {
      this.settled.push({ id: f.id, destination: String(w.body!.destinationAccountId) });
      if (this.settled.length > KEEP) this.settled.shift();
    }
  }

  /** A replay that got an answer must get the first one: same status, same transfer or same refusal. */
  private compare(w: Write, f: Final): void {
    const first = w.replayOf!;
    if (f.status === null || f.status === 503) return; // not answered this time: nothing to compare
    if (f.status !== first.status || f.id !== first.id || f.code !== first.code) {
      this.mismatches.push(`replay of ${w.key} (${w.op} ${w.path}) answered ${f.status} ${f.id ?? f.code ?? ''}, first ${first.status} ${first.id ?? first.code ?? ''}`);
    }
  }

  /** Per region, attempts in slices of `bucketS`, from 0 to the load's end. */
  timeline(bucketS: number): Record<string, Bucket[]> {
    const slices = Math.max(1, Math.ceil(this.endS / bucketS));
    const out: Record<string, Bucket[]> = {};
    for (const region of REGIONS) out[region] = Array.from({ length: slices }, (_, i) => ({ t: i * bucketS, answered: 0, ok: 0 }));
    for (const a of this.attempts) {
      const b = out[a.region]?.[Math.min(slices - 1, Math.floor(a.t / bucketS))];
      if (!b) continue;
      b.answered++;
      if (a.ok) b.ok++;
    }
    return out;
  }

  /** Longest stretch with no acknowledged write among the attempts `which` selects, over [0, end], ms. */
  window(which: (a: { region: string; account: string }) => boolean): number {
    const oks = this.attempts.filter((a) => a.ok && a.t <= this.endS && which(a)).map((a) => a.t).sort((x, y) => x - y);
    let longest = 0;
    let last = 0;
    for (const t of [...oks, this.endS]) {
      longest = Math.max(longest, t - last);
      last = t;
    }
    return Math.round(longest * 1000);
  }
}

function finalOf(r: PostResult): Final {
  const a = r.answer as { id?: unknown } | null;
  const ok = r.status !== null && r.status >= 200 && r.status < 300;
  return { status: r.status, id: ok && typeof a?.id === 'string' ? a.id : undefined, code: ok ? undefined : codeOf(r.answer) };
}
