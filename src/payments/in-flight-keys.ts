// Idempotency within one process. The key is claimed in the same transaction as the write (by
// the actor); here, duplicates that arrive while the original is still running in this process
// wait for its outcome and get the very same answer.
import { GeopayError } from '../domain/errors.ts';

export class InFlightKeys {
  private readonly running = new Map<string, { hash: string; answer: Promise<unknown> }>();

  constructor(private readonly waitMs: number) {}

  async run<T>(scope: string, key: string, hash: string, exec: () => Promise<T>): Promise<T> {
    const k = `${scope}\u0000${key}`;
    const existing = this.running.get(k);
    if (existing) {
      if (existing.hash !== hash) throw new GeopayError('idempotency_key_reused');
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new GeopayError('idempotency_key_in_progress')), this.waitMs);
      });
      try {
        // The same scope and key always run the same workflow, so the same type comes back.
        return await Promise.race([existing.answer as Promise<T>, timeout]);
      } finally {
        clearTimeout(timer);
      }
    }
    const answer = exec();
    this.running.set(k, { hash, answer });
    try {
      return await answer;
    } finally {
      this.running.delete(k);
    }
  }
}
