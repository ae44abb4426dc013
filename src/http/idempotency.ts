// Idempotency at the edge. The key is claimed in the same transaction as the write (by the
// actor); here, duplicates that arrive while the original is still running in this process
// wait for its answer and get the very same status and body.
import { createHash } from 'node:crypto';
import { GeopayError } from '../domain/errors.ts';

export interface HttpAnswer { status: number; body: unknown }

/** A stable hash of what the request asks for: route, params and canonical body. */
export function requestHash(route: string, params: unknown, body: unknown): string {
  return createHash('sha256').update(route).update('\n').update(canonical(params)).update('\n').update(canonical(body)).digest('hex');
}

function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
}

export class InFlightKeys {
  private readonly running = new Map<string, { hash: string; answer: Promise<HttpAnswer> }>();

  constructor(private readonly waitMs: number) {}

  async run(scope: string, key: string, hash: string, exec: () => Promise<HttpAnswer>): Promise<HttpAnswer> {
    const k = `${scope}\u0000${key}`;
    const existing = this.running.get(k);
    if (existing) {
      if (existing.hash !== hash) throw new GeopayError('idempotency_key_reused');
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new GeopayError('idempotency_key_in_progress')), this.waitMs);
      });
      try {
        return await Promise.race([existing.answer, timeout]);
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
