// Turning a payments outcome into an HTTP answer, the same way for the first request and for
// its idempotent replays: a value with the route's status, a failure as problem+json, a
// stored answer verbatim; a replay carries `Idempotent-Replayed: true`.
import type { FastifyReply } from 'fastify';
import type { TransferView } from '../domain/views.ts';
import type { Outcome } from '../payments/index.ts';
import { transferAnswerStatus } from '../payments/index.ts';
import { problem, statusOf } from './errors.ts';

/** `replayed`: the answer to a repeat of a request (an Idempotency-Key seen before). */
export interface HttpAnswer { status: number; body: unknown; replayed: boolean }

export function toAnswer<T>(o: Outcome<T>, status: number | ((value: T) => number)): HttpAnswer {
  switch (o.type) {
    case 'ok':
      return { status: typeof status === 'number' ? status : status(o.value), body: o.value, replayed: o.replayed === true };
    case 'failed':
      return { status: statusOf(o.code), body: problem(o.code), replayed: o.replayed === true };
    case 'stored':
      return { status: o.status, body: o.body, replayed: true };
    default: {
      const never: never = o;
      throw new Error(`unexpected outcome ${JSON.stringify(never)}`);
    }
  }
}

/** A transfer answers 201 once terminal, 202 while in flight (the payments layer's rule, which its stored answers follow). */
export const transferAnswer = (o: Outcome<TransferView>): HttpAnswer => toAnswer(o, (t) => transferAnswerStatus(t.state));

export function send(reply: FastifyReply, a: HttpAnswer): FastifyReply {
  if (a.status >= 400) void reply.type('application/problem+json');
  if (a.replayed) void reply.header('idempotent-replayed', 'true');
  return reply.code(a.status).send(a.body);
}
