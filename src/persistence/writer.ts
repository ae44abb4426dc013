// Node-level group commit. Actors hand their write sets to one writer; the sets handed over in
// one turn of the event loop leave together, and while `lanes` statements are in flight, new
// sets queue and leave together in the next statement. Under light load a set commits alone
// at once (a turn later); under heavy load each statement carries many, so throughput rises
// with load instead of transactions per second capping it.
//
// The one retry policy for a failed commit lives here too: a statement that merged several
// write sets and rolled back is redone one set at a time, and a set made of parts (one actor's
// commands) that failed with an error the server reported is redone one part at a time, so
// that only what is at fault fails.
import type { Metrics } from '../observability/metrics.ts';
import type { Pool } from './db.ts';
import type { CommitObserver, WriteSet } from './journal.ts';
import { WriteConflict, commitSets } from './journal.ts';
import { GeopayError } from '../domain/errors.ts';

/**
 * The server reported the error (an SQLSTATE of its own), so the statement rolled back, and a
 * row of it may be at fault (a constraint, a trigger, a type). Our own checks (GP001, GP002)
 * reach callers as GeopayError and WriteConflict, which carry no SQLSTATE.
 */
export const reportedByServer = (err: unknown): boolean => {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
};

/**
 * The statement rolled back for certain: the server reported an error, or our own checks
 * aborted it (a lost race, a fenced shard). Only then is redoing its sets alone safe; after a
 * lost connection the outcome is unknown.
 */
export const rolledBackForCertain = (err: unknown): boolean =>
  err instanceof WriteConflict || (err instanceof GeopayError && err.code === 'shard_unavailable') || reportedByServer(err);

/**
 * A write set made of parts in order, each planned after the ones before it: an actor's batch,
 * one part per command, whose postings are numbered and balanced after the previous part's.
 * So a part cannot simply be committed without the others: when `whole` fails with an error
 * the server reported, the writer asks `alone` for each part in turn, planned after the parts
 * that committed. `alone` and `failed` are pure: they answer a new progress and never change
 * the one given.
 */
export interface Parts<P> {
  /** Every part together: what is tried first, merged with other actors' sets. */
  readonly whole: WriteSet;
  readonly count: number;
  /** What the first part is planned after. */
  readonly start: P;
  /** Part `index` alone, planned after `progress`, and the progress once it is committed. No `ws`: it writes nothing. */
  alone(progress: P, index: number): { ws: WriteSet | undefined; next: P };
  /** The progress after part `index`, alone, failed with `err`, an error the server reported. */
  failed(progress: P, index: number, err: unknown): P;
}

export type PartsOutcome<P> =
  /** `whole` committed. */
  | { type: 'whole' }
  /** `whole` failed with `cause`, an error the server reported; it was redone part by part, and `progress` tells what became of each part. */
  | { type: 'parts'; progress: P; cause: unknown }
  /**
   * Part by part, until a part failed in a way that is not its own (connection lost, shard
   * fenced, a race lost): the redo stopped there; the parts before it committed, the ones
   * after it were not tried.
   */
  | { type: 'stopped'; error: unknown };

interface Waiting {
  ws: WriteSet;
  committed: () => void;
  reject: (err: unknown) => void;
  /** Present when the set has several parts: redoes them one by one and settles the caller. */
  partByPart: ((cause: unknown) => Promise<void>) | undefined;
}

export class GroupWriter {
  private readonly queue: Waiting[] = [];
  private inFlight = 0;
  /** Statements sent and write sets committed since start (the bench reports the ratio). */
  statements = 0;
  sets = 0;

  constructor(
    private readonly pool: Pool,
    private readonly opts: { lanes: number; maxSets: number },
    private readonly onCommit?: CommitObserver,
    private readonly metrics?: Pick<Metrics, 'commitStatements' | 'batchesCommitted' | 'commitWriteSets' | 'commitDuration'>,
  ) {}

  /** Write sets waiting for a statement (a gauge of the metrics). */
  get queueLength(): number {
    return this.queue.length;
  }

  /** Resolves after COMMIT; rejects when nothing of `ws` was written, or the outcome is unknown. */
  commit(ws: WriteSet): Promise<void> {
    return new Promise((resolve, reject) => {
      this.enqueue({ ws, committed: resolve, reject, partByPart: undefined });
    });
  }

  /** Commits `parts.whole`, or, if the server refuses it, each part alone (see `Parts`). */
  commitParts<P>(parts: Parts<P>): Promise<PartsOutcome<P>> {
    return new Promise((resolve, reject) => {
      this.enqueue({
        ws: parts.whole,
        committed: () => resolve({ type: 'whole' }),
        reject,
        partByPart: parts.count > 1 ? (cause) => this.partByPart(parts, cause).then(resolve, reject) : undefined,
      });
    });
  }

  private pumpScheduled = false;

  /**
   * Statements leave once the turn's I/O callbacks ran (setImmediate): the actors a burst of
   * requests or answers woke in that turn share one statement instead of taking a lane each.
   * bench:core: 8.1-8.4 actor batches per statement before, 12.1 after.
   */
  private enqueue(w: Waiting): void {
    this.queue.push(w);
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.opts.lanes && this.queue.length > 0) {
      const group = this.queue.splice(0, this.opts.maxSets);
      this.inFlight++;
      void this.run(group).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async run(group: Waiting[]): Promise<void> {
    try {
      await this.statement(group.map((g) => g.ws));
    } catch (err) {
      if (group.length === 1) return this.failedAlone(group[0]!, err);
      if (!rolledBackForCertain(err)) {
        // The outcome is unknown (connection lost): every set gets the error and its actor
        // reloads from the journal.
        for (const g of group) g.reject(err);
        return;
      }
      // One set spoiled a shared statement (a fenced shard, a lost race, a bad row):
      // commit each alone, so only the one at fault fails.
      await Promise.all(group.map((g) => this.alone(g)));
      return;
    }
    for (const g of group) this.settled(g);
  }

  private async alone(g: Waiting): Promise<void> {
    try {
      await this.statement([g.ws]);
    } catch (err) {
      return this.failedAlone(g, err);
    }
    this.settled(g);
  }

  /**
   * A set failed in a statement of its own. With an error the server reported, a set of
   * several parts is redone part by part; anything else (a lost race, a fence, a lost
   * connection) is the whole set's answer: its actor redoes it from fresh reads, stops, or reloads.
   */
  private async failedAlone(g: Waiting, err: unknown): Promise<void> {
    if (g.partByPart && reportedByServer(err)) await g.partByPart(err);
    else g.reject(err);
  }

  private async partByPart<P>(parts: Parts<P>, cause: unknown): Promise<PartsOutcome<P>> {
    let progress = parts.start;
    for (let i = 0; i < parts.count; i++) {
      const { ws, next } = parts.alone(progress, i);
      if (ws === undefined) {
        progress = next;
        continue;
      }
      try {
        await this.statement([ws]);
      } catch (err) {
        if (!reportedByServer(err)) return { type: 'stopped', error: err };
        progress = parts.failed(progress, i, err);
        continue;
      }
      this.observe(ws);
      progress = next;
    }
    return { type: 'parts', progress, cause };
  }

  private async statement(sets: WriteSet[]): Promise<void> {
    this.statements++;
    const m = this.metrics;
    m?.commitStatements.inc();
    m?.commitWriteSets.observe(sets.length);
    const t0 = performance.now();
    try {
      await commitSets(this.pool, sets);
    } finally {
      m?.commitDuration.observe((performance.now() - t0) / 1_000);
    }
  }

  private settled(g: Waiting): void {
    this.observe(g.ws);
    g.committed();
  }

  private observe(ws: WriteSet): void {
    this.sets++;
    this.metrics?.batchesCommitted.inc();
    this.onCommit?.(ws);
  }
}
