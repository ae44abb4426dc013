// Idempotency within one process. The key is claimed in the same transaction as the write (by
// the actor); here, duplicates that arrive while the original is still running in this process
// wait for its outcome and get the very same answer, marked as a replay.
//
// Only the very same request is coalesced: one with another body under the same key runs on
// its own and is judged where the key is stored (the actor's batch, the key's row), against
// the request that holds the key there, never against whichever request happens to be in
// flight here (an honest replay racing a conflicting one still gets its stored answer).
import { GeopayError } from '../domain/errors.ts';
import type { Outcome } from './outcome.ts';
import { replayed } from './outcome.ts';

/**
 * Given to a workflow: keep the entry (and its answer for duplicates) until `done` settles,
 * e.g. until the answer is stored where replays on other nodes and after a restart read it.
 */
export type KeepUntil = (done: Promise<unknown>) => void;

export class InFlightKeys {
  private readonly running = new Map<string, { answer: Promise<unknown> }>();

  constructor(private readonly waitMs: number) {}

  async run<T>(scope: string, key: string, hash: string, exec: (keep: KeepUntil) => Promise<T>): Promise<T> {
    const k = `${scope}\u0000${key}\u0000${hash}`;
    const existing = this.running.get(k);
    // The same scope, key and hash always run the same workflow, so the same type comes back.
    if (existing) return asReplay(await this.waitFor(existing.answer as Promise<T>));
    let kept: Promise<unknown> | undefined;
    const answer = exec((done) => { kept = done; });
    const entry = { answer };
    this.running.set(k, entry);
    try {
      return await answer;
    } finally {
      const forget = () => {
        if (this.running.get(k) === entry) this.running.delete(k);
      };
      if (kept) void kept.then(forget, forget);
      else forget();
    }
  }

  private async waitFor<T>(answer: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new GeopayError('idempotency_key_in_progress')), this.waitMs);
    });
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A duplicate's copy of the original's answer, marked as a replay (an outcome, or a batch's). */
function asReplay<T>(answer: T): T {
  if (isBatch(answer)) return { ...answer, replayed: true };
  return isOutcome(answer) ? replayed(answer) : answer;
}

function isBatch<T>(v: T): v is T & { type: 'batch'; replayed: boolean } {
  return typeof v === 'object' && v !== null && 'type' in v && v.type === 'batch';
}

function isOutcome<T>(v: T): v is T & Outcome<unknown> {
  if (typeof v !== 'object' || v === null || !('type' in v)) return false;
  return v.type === 'ok' || v.type === 'failed' || v.type === 'stored';
}
