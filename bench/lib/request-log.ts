// The request log: one NDJSON line per attempt of every money-moving or account-opening POST
// (key, body, status, answer). It is the client's side of the story, which the checker holds
// against the database: every acknowledged transfer must be there, once, as it was asked.
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

export interface RequestRecord {
  /** When this attempt was sent (ISO 8601). */
  ts: string;
  run: string;
  /** setup, warmup, or the workload being measured. */
  phase: string;
  engine: string;
  /** The tenant the key acts for ('admin' for admin calls): idempotency keys are per tenant. */
  tenant: string;
  op: string;
  method: string;
  path: string;
  key: string;
  body: unknown;
  /** 1 for the first attempt; a retry repeats key and body exactly. */
  attempt: number;
  /** null when no answer came back (client timeout, connection error). */
  status: number | null;
  error?: string;
  answer: unknown;
  /** This attempt's duration. */
  ms: number;
}

/** Appends records; writes are buffered by the stream, close() waits until they are on disk. */
export class RequestLog {
  private readonly out: WriteStream;
  private failed: Error | undefined;
  written = 0;

  constructor(readonly path: string) {
    this.out = createWriteStream(path, { flags: 'w' });
    // A disk error must fail the run at close, not crash it mid-measurement.
    this.out.on('error', (err) => { this.failed = err; });
  }

  write(r: RequestRecord): void {
    if (this.failed) return;
    this.out.write(`${JSON.stringify(r)}\n`);
    this.written++;
  }

  async close(): Promise<void> {
    if (!this.out.closed && !this.failed) {
      this.out.end();
      await once(this.out, 'close');
    }
    if (this.failed) throw new Error(`request log ${this.path}: ${this.failed.message}`, { cause: this.failed });
  }
}

/** Streams the records of a log, so a log larger than memory can still be checked. */
export async function* readRequestLog(path: string): AsyncGenerator<RequestRecord> {
  const lines = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === '') continue;
    try {
      yield JSON.parse(line) as RequestRecord;
    } catch (err) {
      throw new Error(`${path}:${n}: not a JSON record`, { cause: err });
    }
  }
}
