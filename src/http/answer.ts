// Turning an actor's result into an HTTP answer, the same way for the first request and for
// its idempotent replays.
import type { FastifyReply } from 'fastify';
import type { AccountReply } from '../domain/account.ts';
import { ERRORS, GeopayError } from '../domain/errors.ts';
import { problem } from '../domain/views.ts';
import type { CommandResult } from '../actors/protocol.ts';
import type { StoredKey } from '../persistence/journal.ts';
import type { HttpAnswer } from './idempotency.ts';

export function rejection(reply: AccountReply): HttpAnswer | undefined {
  if (reply.ok) return undefined;
  return { status: ERRORS[reply.code].status, body: problem(reply.code) };
}

export async function answer(
  r: CommandResult,
  hash: string | undefined,
  onOk: (reply: Extract<AccountReply, { ok: true }>) => Promise<HttpAnswer> | HttpAnswer,
  replay: (stored: StoredKey) => Promise<HttpAnswer>,
): Promise<HttpAnswer> {
  switch (r.type) {
    case 'error':
      throw r.error;
    case 'duplicate':
      if (hash !== undefined && r.stored.requestHash !== hash) throw new GeopayError('idempotency_key_reused');
      if (r.stored.statusCode !== null) return { status: r.stored.statusCode, body: r.stored.response };
      return replay(r.stored);
    case 'done':
      return rejection(r.reply) ?? onOk(r.reply as Extract<AccountReply, { ok: true }>);
    default: {
      const never: never = r;
      throw new Error(`unexpected result ${JSON.stringify(never)}`);
    }
  }
}

export function send(reply: FastifyReply, a: HttpAnswer): FastifyReply {
  if (a.status >= 400) void reply.type('application/problem+json');
  return reply.code(a.status).send(a.body);
}

