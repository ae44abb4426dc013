// Turning an actor's result into a workflow's outcome, the same way for the first request
// and for its idempotent replays.
import type { AccountReply } from '../domain/account.ts';
import { GeopayError } from '../domain/errors.ts';
import type { CommandResult } from '../actors/protocol.ts';
import type { StoredKey } from '../persistence/journal.ts';
import type { Outcome } from './outcome.ts';
import { failed, replayed } from './outcome.ts';

export type Accepted = Extract<AccountReply, { ok: true }>;

export async function resolve<T>(
  r: CommandResult,
  hash: string | undefined,
  onOk: (reply: Accepted) => Promise<Outcome<T>> | Outcome<T>,
  replay: (stored: StoredKey) => Promise<Outcome<T>>,
): Promise<Outcome<T>> {
  switch (r.type) {
    case 'error':
      throw r.error;
    case 'duplicate':
      if (hash !== undefined && r.stored.requestHash !== hash) throw new GeopayError('idempotency_key_reused');
      if (r.stored.statusCode !== null) return { type: 'stored', status: r.stored.statusCode, body: r.stored.response };
      return replayed(await replay(r.stored));
    case 'done':
      return r.reply.ok ? onOk(r.reply) : failed(r.reply.code);
    default: {
      const never: never = r;
      throw new Error(`unexpected result ${JSON.stringify(never)}`);
    }
  }
}

/** A replay that finds its key claimed but its answer not stored yet: the original still runs. */
export const stillRunning = async (): Promise<never> => {
  throw new GeopayError('idempotency_key_in_progress');
};
