// Publishing to a stream, always with the caller's dedupe id as Nats-Msg-Id: a re-publish of the
// same outbox row within the stream's duplicate window is stored once, and its ack says so.
// A publish that gets no ack throws; the outbox relay keeps the row and publishes it again.
import type { JetStreamClient } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/transport-node';
import assert from 'node:assert/strict';
import { MSG_ID_HEADER } from './message.ts';

export interface PublishOptions {
  /** The dedupe id (e.g. transfer id + leg); the same id within the duplicate window is stored once. */
  msgId: string;
  /** Extra headers; Nats-Msg-Id is set from msgId and may not be given here. */
  headers?: Record<string, string>;
}

export interface PublishAck {
  stream: string;
  /** The stream seq of the stored message; for a duplicate, that of the copy stored first. */
  streamSeq: number;
  /** True when the msgId was seen within the duplicate window: nothing new was stored. */
  duplicate: boolean;
}

export interface PublishLimits {
  /** Bound on one attempt's wait for the stream's ack. */
  timeoutMs: number;
  /** Attempts when no stream answers (no responders, a timeout), e.g. while a stream leader is elected. */
  attempts: number;
}

export async function publish(
  js: JetStreamClient,
  limits: PublishLimits,
  subject: string,
  payload: Uint8Array | string,
  opts: PublishOptions,
): Promise<PublishAck> {
  assert.ok(opts.msgId !== '', `publish to ${subject}: msgId must not be empty`);
  const hdrs = natsHeaders();
  for (const [name, value] of Object.entries(opts.headers ?? {})) {
    assert.ok(name.toLowerCase() !== MSG_ID_HEADER.toLowerCase(), `publish to ${subject}: set the dedupe id through msgId, not headers`);
    hdrs.set(name, value);
  }
  // The client writes msgID into the Nats-Msg-Id header.
  const ack = await js.publish(subject, payload, { msgID: opts.msgId, headers: hdrs, timeout: limits.timeoutMs, retries: limits.attempts });
  return { stream: ack.stream, streamSeq: ack.seq, duplicate: ack.duplicate };
}
