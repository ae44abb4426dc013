// Turning a payments outcome into an HTTP answer, the same way for the first request and for
// its idempotent replays: a value with the route's status, a failure as problem+json, a
// stored answer verbatim.
import type { FastifyReply } from 'fastify';
import type { TransferView } from '../domain/views.ts';
import type { Outcome } from '../payments/index.ts';
import { problem, statusOf, transferStatus } from './errors.ts';

export interface HttpAnswer { status: number; body: unknown }

export function toAnswer<T>(o: Outcome<T>, status: number | ((value: T) => number)): HttpAnswer {
  switch (o.type) {
    case 'ok':
      return { status: typeof status === 'number' ? status : status(o.value), body: o.value };
    case 'failed':
      return { status: statusOf(o.code), body: problem(o.code) };
    case 'stored':
      return { status: o.status, body: o.body };
    default: {
      const never: never = o;
      throw new Error(`unexpected outcome ${JSON.stringify(never)}`);
    }
  }
}

/** A transfer answers 201 once terminal, 202 while in flight. */
export const transferAnswer = (o: Outcome<TransferView>): HttpAnswer => toAnswer(o, (t) => transferStatus(t.state));

export function send(reply: FastifyReply, a: HttpAnswer): FastifyReply {
  if (a.status >= 400) void reply.type('application/problem+json');
  return reply.code(a.status).send(a.body);
}
