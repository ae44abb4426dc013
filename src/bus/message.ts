// What a consumer's handler sees of a JetStream delivery: the subject, the bytes, the publisher's
// dedupe id and where the message stands (stream seq, how often it was delivered). The
// ack/nak calls stay with the runner, so a handler can only answer 'ack' or 'retry'.
import type { JsMsg } from '@nats-io/jetstream';

/** The header JetStream deduplicates on within the stream's duplicate window. */
export const MSG_ID_HEADER = 'Nats-Msg-Id';

export interface BusMessage {
  readonly stream: string;
  readonly subject: string;
  readonly data: Uint8Array;
  /** The Nats-Msg-Id it was published with (publish() always sets one). */
  readonly msgId: string | undefined;
  /** 1 on the first delivery, 2 on the first redelivery, and so on. */
  readonly deliveryCount: number;
  /** Its position in the stream: the same on every redelivery. */
  readonly streamSeq: number;
  /** A header as published, or undefined. */
  header(name: string): string | undefined;
}

/** The handler's answer: 'ack' once its effect is committed, 'retry' to have it delivered again later. */
export type HandlerOutcome = 'ack' | 'retry';
export type MessageHandler = (msg: BusMessage) => Promise<HandlerOutcome>;

export function toBusMessage(msg: JsMsg): BusMessage {
  const headers = msg.headers;
  const header = (name: string): string | undefined => {
    // MsgHdrs.get answers '' for a missing header; a present but empty one reads as missing too.
    const value = headers?.get(name);
    return value === undefined || value === '' ? undefined : value;
  };
  return {
    stream: msg.info.stream,
    subject: msg.subject,
    data: msg.data,
    msgId: header(MSG_ID_HEADER),
    deliveryCount: msg.info.deliveryCount,
    streamSeq: msg.seq,
    header,
  };
}
