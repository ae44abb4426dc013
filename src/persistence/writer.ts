// Node-level group commit. Actors hand their write sets to one writer; while `lanes`
// statements are in flight, new sets queue and leave together in the next statement. Under
// light load a set commits alone at once; under heavy load each statement carries many, so
// throughput rises with load instead of transactions per second capping it.
import type { Pool } from './db.ts';
import type { CommitObserver, WriteSet } from './journal.ts';
import { WriteConflict, commitSets } from './journal.ts';
import { GeopayError } from '../domain/errors.ts';

interface Waiting { ws: WriteSet; resolve: () => void; reject: (err: unknown) => void }

/**
 * The statement rolled back for certain: the server reported an error (an SQLSTATE), or our
 * own checks aborted it (a lost race, a fenced shard). Only then is redoing its sets alone safe.
 */
const rolledBack = (err: unknown): boolean => {
  if (err instanceof WriteConflict) return true;
  if (err instanceof GeopayError && err.code === 'shard_unavailable') return true;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
};

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
  ) {}

  commit(ws: WriteSet): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ws, resolve, reject });
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
      this.statements++;
      await commitSets(this.pool, group.map((g) => g.ws));
      this.done(group);
    } catch (err) {
      if (group.length === 1 || !rolledBack(err)) {
        // Alone, or the outcome is unknown (connection lost): every set gets the error and
        // its actor reloads from the journal.
        for (const g of group) g.reject(err);
        return;
      }
      // One set spoiled a shared statement (a fenced shard, a lost race): commit each alone,
      // so only the one at fault fails.
      await Promise.all(group.map(async (g) => {
        try {
          this.statements++;
          await commitSets(this.pool, [g.ws]);
          this.done([g]);
        } catch (e) {
          g.reject(e);
        }
      }));
    }
  }

  private done(group: Waiting[]): void {
    this.sets += group.length;
    for (const g of group) {
      this.onCommit?.(g.ws);
      g.resolve();
    }
  }
}
