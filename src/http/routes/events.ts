// Ledger event routes: the tenant's feed (GET /v1/events, a page after an opaque cursor) and one
// account's events (GET /v1/accounts/:id/events): a page, or, to a client that accepts
// text/event-stream, Server-Sent Events that resume after Last-Event-ID. The stream's
// following (catch-up, wake-ups, polls) is the payments layer's; this file only frames it.
import { PassThrough } from 'node:stream';
import { once } from 'node:events';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { EventFollow, LedgerEventView } from '../../payments/events.ts';
import type { Ctx } from '../context.ts';
import { tenantOf } from '../context.ts';
import { accountEventsResponse, eventIdString, eventPageLimit, feedCursor, idParams, tenantEventsResponse } from '../schemas.ts';

const feedSchema = {
  tags: ['accounts'],
  querystring: { type: 'object', additionalProperties: false, properties: { after: feedCursor, limit: eventPageLimit } },
  response: { 200: tenantEventsResponse },
};

const accountSchema = {
  tags: ['accounts'], params: idParams,
  querystring: { type: 'object', additionalProperties: false, properties: { after: eventIdString, limit: eventPageLimit } },
  headers: { type: 'object', properties: { 'last-event-id': eventIdString } },
  response: { 200: accountEventsResponse },
};

const limitOf = (raw: string | undefined): number | undefined => (raw === undefined ? undefined : Number(raw));

/** Does the client ask for the stream? EventSource always sends `Accept: text/event-stream`. (A HEAD gets the page's headers.) */
const wantsStream = (req: FastifyRequest): boolean => req.method === 'GET' && /(^|,)\s*text\/event-stream\s*(;|,|$)/i.test(req.headers.accept ?? '');

export function eventRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { events } = ctx.payments;
  // Open streams end when the server closes: their clients resume elsewhere with Last-Event-ID.
  const open = new Set<PassThrough>();
  app.addHook('preClose', async () => {
    for (const stream of open) stream.end();
  });

  app.get('/v1/events', { schema: feedSchema }, async (req) => {
    const q = req.query as { after?: string; limit?: string };
    return events.tenantPage(tenantOf(req), q.after, limitOf(q.limit));
  });

  app.get('/v1/accounts/:id/events', { schema: accountSchema }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const { id } = req.params as { id: string };
    const q = req.query as { after?: string; limit?: string };
    // A reconnecting EventSource sends the id of the last event it saw; it wins over ?after.
    const after = (req.headers['last-event-id'] as string | undefined) ?? q.after;
    if (!wantsStream(req)) return events.accountPage(tenantId, id, after, limitOf(q.limit));
    const follow = await events.follow(tenantId, id, after);
    return streamEvents(reply, follow, open, req.log);
  });
}

/** An SSE frame: `id` the event's (a client's resume point), `event` its type, `data` the event. */
const frameOf = (e: LedgerEventView): string => `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;

/**
 * Answers with the stream and writes the follow's events into it until the client goes (fastify
 * destroys the stream when the response closes), the server closes, or a read fails (the
 * client reconnects and resumes after the last id it got: nothing is lost or repeated).
 */
function streamEvents(reply: FastifyReply, follow: EventFollow, open: Set<PassThrough>, log: FastifyBaseLogger): FastifyReply {
  const stream = new PassThrough();
  const gone = new AbortController();
  stream.once('close', () => gone.abort());
  stream.once('finish', () => gone.abort());
  open.add(stream);
  void (async () => {
    // First bytes at once, so the client sees the answer's headers before the first event.
    stream.write(`: heartbeat every ${follow.heartbeatMs} ms without an event\n\n`);
    while (!gone.signal.aborted) {
      const found = await follow.next(gone.signal);
      if (gone.signal.aborted) break;
      const text = found.length > 0 ? found.map(frameOf).join('') : ': heartbeat\n\n';
      if (!stream.write(text)) await once(stream, 'drain', { signal: gone.signal });
    }
  })().catch((err: unknown) => {
    if (!gone.signal.aborted) log.warn({ err }, 'event stream ended by a failed read');
  }).finally(() => {
    open.delete(stream);
    stream.end();
  });
  return reply
    .type('text/event-stream; charset=utf-8')
    .header('cache-control', 'no-cache')
    .header('x-accel-buffering', 'no')
    // The connection ends with the stream: a keep-alive socket left idle by a stream the server
    // ended while closing would hold the close up for the keep-alive timeout.
    .header('connection', 'close')
    .send(stream);
}
