// The first answer of a transfer, stored beside its Idempotency-Key so that every replay gives
// it back byte for byte. A transfer's answer is only known after its request stopped waiting for
// the credit (201 or 202), after the key was committed with the debit, so it is a second
// write: an UPDATE of rows still without an answer. It is batched (one statement carries every
// answer queued while the previous one ran) and off the request's path: the request answers
// first, and a replay that finds no answer yet (stored a moment later, or lost with a crash in
// between) answers the transfer as it stands (docs/api.md, "Replays").
import type { Pool } from './db.ts';

export interface AnswerRow { tenantId: string; key: string; requestHash: string; status: number; body: unknown }

/** Rows per statement; more wait for the next one. */
const MAX_ROWS = 1_000;

/** Stores answers where none is stored yet, for the key's own request: never overwrites one. */
export async function storeAnswers(pool: Pool, rows: readonly AnswerRow[]): Promise<void> {
  await pool.query(
    `UPDATE idempotency_keys k SET status_code = x.s, response = x.r
     FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::jsonb[]) AS x(t, ky, h, s, r)
     WHERE k.tenant_id = x.t AND k.key = x.ky AND k.request_hash = x.h AND k.status_code IS NULL`,
    [rows.map((r) => r.tenantId), rows.map((r) => r.key), rows.map((r) => r.requestHash), rows.map((r) => r.status), rows.map((r) => JSON.stringify(r.body))],
  );
}

interface Queued { row: AnswerRow; done: () => void; failed: (err: unknown) => void }

/** One statement at a time; what arrives meanwhile leaves together in the next. */
export class AnswerWriter {
  private queue: Queued[] = [];
  private running: Promise<void> | undefined;

  constructor(private readonly pool: Pool) {}

  /** Resolves once the answer is stored (or was stored already); rejects when the statement failed. */
  store(row: AnswerRow): Promise<void> {
    return new Promise((done, failed) => {
      this.queue.push({ row, done, failed });
      if (!this.running) this.running = this.drain();
    });
  }

  /** Resolves when nothing is queued or being written (shutdown, before the pool closes). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const group = this.queue.splice(0, MAX_ROWS);
      try {
        await storeAnswers(this.pool, group.map((q) => q.row));
        for (const q of group) q.done();
      } catch (err) {
        for (const q of group) q.failed(err);
      }
    }
    this.running = undefined;
  }
}
