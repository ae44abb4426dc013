// What a chaos run measures, shared by the runner (scripts/chaos/run.ts), the report
// (scripts/chaos/report.ts) and the test that runs the short version (test/chaos.test.ts).

/** One slice of the load's timeline in one region (the region of the account the write debits). */
export interface Bucket {
  /** Seconds from the start of the scenario's load to the start of this slice. */
  t: number;
  /** Client attempts that ended in this slice (answered, refused, timed out...): a retry is an attempt. */
  answered: number;
  /** Of those, 2xx: the write was acknowledged. */
  ok: number;
}

/** One fault scenario: one row of the table. */
export interface FaultRow {
  /** Short id, as --only takes it: kill-owner, redis-majority, pg-restart, ... */
  fault: string;
  /** What was done, in words: "kill -9 of eu-1, owner of shard eu-03 (the hot account's)". */
  action: string;
  /** Seconds of load in the scenario, the fault inside it. */
  loadSeconds: number;
  /** Writes sent (first attempts, replays included), and how each ended after the client's retries. */
  sent: number;
  acknowledged: number;
  /** 422: refused by the ledger (insufficient funds, ...) or by the request's validation. */
  refused: number;
  /** The refusals by code (insufficient_funds, ...): each is the ledger's or the API's answer, not a failure. */
  refusedCodes: Record<string, number>;
  /** Attempts that were not acknowledged (retried or final), by status and code: "503 region_unavailable", "none timeout". */
  attemptErrors: Record<string, number>;
  /** Ended on 503 (the client gave up retrying) or with no answer at all. */
  unavailable: number;
  /** Ended on 429, with Retry-After. */
  rateLimited: number;
  /** Anything else (4xx other than 422/429, 5xx other than 503). */
  other: number;
  /** Acknowledged writes' latency (the load's own), from the first attempt to the answer, retries included; null with none. */
  p50Ms: number | null;
  p99Ms: number | null;
  /** Replays of an earlier Idempotency-Key among `sent`, and how many answered other than the first time. */
  replays: number;
  replayMismatches: number;
  /** Longest stretch with no acknowledged write, per region, ms, over the load's span. */
  windowMsByRegion: Record<string, number>;
  /**
   * The accounts the fault aims at (those on the killed owner's shards, ...) and their longest
   * stretch with no acknowledged write, ms; null when the fault has no such target.
   */
  affected: { label: string; windowMs: number } | null;
  /** The longest of the regions' windows and the affected accounts' window. */
  longestWindowMs: number;
  /** The bound the fault's window is held to (lease TTL + 2 s for an owner's death, ...). */
  boundMs: number;
  /** From the heal until every transfer in flight at the heal (created before it) had settled, in every region's database. */
  settleMs: number;
  /** Checker failures (money created or lost, a payment applied twice, an acknowledged one missing...) plus replay mismatches. */
  violations: number;
  /** The first failures, as the checker worded them. */
  failures: string[];
  /** Seconds from the load's start: when the fault was injected and when it was healed. */
  faultStartS: number;
  faultEndS: number;
  /** Per region, the load's timeline in slices of `bucketS` seconds. */
  timeline: Record<string, Bucket[]>;
  bucketS: number;
}

export interface ChaosReport {
  /** ISO 8601. */
  startedAt: string;
  /** The command line that produced it. */
  command: string;
  seed: number;
  /** Load seconds per fault (--seconds). */
  seconds: number;
  /** Open-loop writes per second. */
  rate: number;
  leaseTtlMs: number;
  /** nodes per region, Redis masters, PostgreSQL servers, nats-servers. */
  cluster: { regions: Record<string, number>; redisMasters: number; postgres: number; nats: number };
  rows: FaultRow[];
  totals: { faults: number; violations: number; longestWindowMs: number };
}
