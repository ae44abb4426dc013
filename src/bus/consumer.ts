// The durable pull consumer runner: pulls batches, runs the handler on each message and acks it
// only once the handler answered 'ack' (its effect is committed). 'retry', a throw or a handler
// past its time bound naks the delivery with a growing delay; the consumer's max_deliver is -1,
// so a message that keeps failing is retried, logged and counted, never dropped. The pull loop
// outlives disconnects and server restarts (the client reconnects and pulls again).
import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg } from '@nats-io/jetstream';
import { millis } from '@nats-io/transport-node';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { toBusMessage, type BusMessage, type MessageHandler } from './message.ts';

export interface ConsumeOptions {
  /** Messages asked for per pull request, and so at most buffered in this process; default 16. */
  batchSize?: number;
  /** Handlers running at once; 1 (the default) handles messages in stream order. */
  concurrency?: number;
  /** The nak delay after a first failed delivery, doubled on each further one; default 1 s. */
  retryDelayMs?: number;
  /** Bound on that delay; default 60 s. */
  maxRetryDelayMs?: number;
  /** From this delivery count on a failure is logged at warn ("keeps failing"), before it at debug; default 5. */
  warnAfterDeliveries?: number;
  /** A handler that has not settled within this counts as failed and its delivery is naked; default: the consumer's ack wait. */
  handlerTimeoutMs?: number;
  /**
   * Lifetime of one pull request at the server; the server sends heartbeats at half of it, and
   * two missed ones make the client pull again (a consumer leader lost on a cluster). Default 10 s.
   */
  pullExpiresMs?: number;
  /** stop() waits this long for handlers in flight; default 30 s. */
  stopTimeoutMs?: number;
  /** Called on every delivery that was not acked, e.g. to count it in a metric. */
  onFailure?: (failure: HandlerFailure) => void;
  /**
   * true (the default): a double ack, the server confirms it recorded it. false: a plain ack, no
   * round trip; one that is lost makes the message come again after its ack wait.
   */
  confirmAcks?: boolean;
}

export interface HandlerFailure {
  stream: string;
  durable: string;
  subject: string;
  streamSeq: number;
  msgId: string | undefined;
  deliveryCount: number;
  /** retry: the handler answered 'retry'; error: it threw; timeout: it did not settle in time. */
  reason: 'retry' | 'error' | 'timeout';
  /** What the handler threw, for reason 'error'. */
  err?: unknown;
  /** deliveryCount has reached warnAfterDeliveries: this message keeps failing. */
  keepsFailing: boolean;
}

export interface ConsumerRunner {
  /** Stops pulling, naks what was pulled but not started, waits for handlers in flight (bounded). */
  stop(): Promise<void>;
}

type Settings = Required<Omit<ConsumeOptions, 'onFailure'>> & Pick<ConsumeOptions, 'onFailure'>;

/** After a pull loop failed (server gone, consumer missing), wait this long, doubling to the max, before pulling again. */
const pullRestartDelayMs = 250;
const maxPullRestartDelayMs = 5_000;

/** Starts the runner; resolves once the durable consumer was found (it must exist: ensureConsumer runs first). */
export async function startConsumer(
  js: JetStreamClient,
  stream: string,
  durable: string,
  handler: MessageHandler,
  opts: ConsumeOptions,
  logger: Logger,
  connectionClosed: () => boolean,
): Promise<ConsumerRunner> {
  const consumer = await js.consumers.get(stream, durable);
  const info = await consumer.info(true);
  const ackWaitMs = millis(info.config.ack_wait ?? 0);
  const settings: Settings = {
    batchSize: opts.batchSize ?? 16,
    concurrency: opts.concurrency ?? 1,
    retryDelayMs: opts.retryDelayMs ?? 1_000,
    maxRetryDelayMs: opts.maxRetryDelayMs ?? 60_000,
    warnAfterDeliveries: opts.warnAfterDeliveries ?? 5,
    handlerTimeoutMs: opts.handlerTimeoutMs ?? ackWaitMs,
    pullExpiresMs: opts.pullExpiresMs ?? 10_000,
    stopTimeoutMs: opts.stopTimeoutMs ?? 30_000,
    onFailure: opts.onFailure,
    confirmAcks: opts.confirmAcks ?? true,
  };
  assert.ok(settings.concurrency >= 1 && settings.concurrency <= settings.batchSize, 'concurrency must be 1 to batchSize');
  assert.ok(settings.handlerTimeoutMs > 0, 'handlerTimeoutMs must be positive');
  assert.ok(settings.pullExpiresMs >= 1_000, 'pullExpiresMs must be at least 1 s (the client refuses less)');
  const runner = new Runner(consumer, stream, durable, handler, settings, logger.child({ stream, durable }), connectionClosed);
  runner.start();
  return runner;
}

class Runner implements ConsumerRunner {
  private stopping = false;
  private messages: ConsumerMessages | undefined;
  private loop: Promise<void> = Promise.resolve();
  /** Handlers the runner waits for: their delivery is acked or naked when they settle. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Handlers past their time bound: their delivery was naked already; stop() still lets them finish. */
  private readonly overdue = new Set<Promise<unknown>>();

  constructor(
    private readonly consumer: Consumer,
    private readonly stream: string,
    private readonly durable: string,
    private readonly handler: MessageHandler,
    private readonly settings: Settings,
    private readonly logger: Logger,
    /** True once the connection is closed for good (close(), not a disconnect): nothing left to pull from. */
    private readonly connectionClosed: () => boolean,
  ) {}

  start(): void {
    this.loop = this.pullForever();
  }

  async stop(): Promise<void> {
    if (this.stopping) return this.loop;
    this.stopping = true;
    this.messages?.stop();
    await this.loop;
  }

  private async pullForever(): Promise<void> {
    let restartDelayMs = pullRestartDelayMs;
    while (!this.stopping && !this.connectionClosed()) {
      try {
        const handled = await this.pullUntilStopped();
        if (handled > 0) restartDelayMs = pullRestartDelayMs;
        if (!this.stopping) this.logger.warn('bus pull ended; pulling again');
      } catch (err) {
        if (this.stopping) break;
        this.logger.warn({ err }, 'bus pull failed; pulling again');
      }
      if (this.stopping || this.connectionClosed()) break;
      await sleep(restartDelayMs);
      restartDelayMs = Math.min(restartDelayMs * 2, maxPullRestartDelayMs);
    }
    await this.drain();
  }

  /** One consume() iterator until it ends (stop, or an error the client could not recover from); returns how many messages it handled. */
  private async pullUntilStopped(): Promise<number> {
    const messages = await this.consumer.consume({ max_messages: this.settings.batchSize, expires: this.settings.pullExpiresMs });
    this.messages = messages;
    if (this.stopping) messages.stop();
    void this.logNotifications(messages);
    let handled = 0;
    for await (const msg of messages) {
      while (this.inFlight.size >= this.settings.concurrency) await Promise.race(this.inFlight);
      if (this.stopping) {
        // Hand this one back at once, and iterate no further: the client's iterator holds its
        // next pull requests queued among the messages, and running them after stop() would
        // leave requests open at the server for an inbox nobody reads, which swallow
        // redeliveries until their ack wait. The rest of the batch comes back after its ack wait.
        msg.nak();
        break;
      }
      const task = this.handleOne(msg).finally(() => this.inFlight.delete(task));
      this.inFlight.add(task);
      handled++;
    }
    // Stopping: drain() waits for them, within stopTimeoutMs. Otherwise each settles within its
    // handler bound, and the next iterator starts with none in flight.
    if (!this.stopping) await Promise.all(this.inFlight);
    return handled;
  }

  private async logNotifications(messages: ConsumerMessages): Promise<void> {
    for await (const note of messages.status()) {
      if (note.type === 'heartbeats_missed' || note.type === 'consumer_not_found' || note.type === 'consumer_deleted' || note.type === 'stream_not_found') {
        this.logger.warn({ note: note.type }, 'bus consumer notification');
      }
    }
  }

  /** Never throws: every path ends in an ack or a nak (or, if the connection is gone, the ack wait). */
  private async handleOne(msg: JsMsg): Promise<void> {
    const message = toBusMessage(msg);
    // A handler that throws before its first await fails like one that rejects.
    const work = (async () => this.handler(message))();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.settings.handlerTimeoutMs);
    });
    try {
      const outcome = await Promise.race([work, timedOut]);
      if (outcome === 'ack') return await this.ack(msg, message);
      if (outcome === 'timeout') this.keepOverdue(work, message);
      this.fail(msg, message, outcome);
    } catch (err) {
      this.fail(msg, message, 'error', err);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A double ack: the server confirms it recorded the ack. If the confirmation does not come
   * (connection lost), the delivery may come again after the ack wait; the handler's effect is
   * keyed, so a second run is a no-op.
   */
  private async ack(msg: JsMsg, message: BusMessage): Promise<void> {
    if (!this.settings.confirmAcks) {
      msg.ack();
      return;
    }
    try {
      await msg.ackAck();
    } catch (err) {
      this.logger.warn({ err, subject: message.subject, streamSeq: message.streamSeq, deliveryCount: message.deliveryCount }, 'bus ack not confirmed; the message may be delivered again');
    }
  }

  private fail(msg: JsMsg, message: BusMessage, reason: HandlerFailure['reason'], err?: unknown): void {
    const keepsFailing = message.deliveryCount >= this.settings.warnAfterDeliveries;
    const delayMs = Math.min(this.settings.retryDelayMs * 2 ** Math.min(message.deliveryCount - 1, 30), this.settings.maxRetryDelayMs);
    const fields = { subject: message.subject, streamSeq: message.streamSeq, msgId: message.msgId, deliveryCount: message.deliveryCount, reason, retryInMs: delayMs, err };
    if (keepsFailing) this.logger.warn(fields, 'bus message keeps failing');
    else this.logger.debug(fields, 'bus message failed; retrying');
    // Never term(): a message that keeps failing stays in the stream and is retried.
    msg.nak(delayMs);
    this.settings.onFailure?.({
      stream: this.stream,
      durable: this.durable,
      subject: message.subject,
      streamSeq: message.streamSeq,
      msgId: message.msgId,
      deliveryCount: message.deliveryCount,
      reason,
      err,
      keepsFailing,
    });
  }

  private keepOverdue(work: Promise<unknown>, message: BusMessage): void {
    const settled = work
      .then((outcome) => this.logger.warn({ subject: message.subject, streamSeq: message.streamSeq, outcome }, 'bus handler settled after its time bound; its delivery was naked already'))
      .catch((err: unknown) => this.logger.warn({ err, subject: message.subject, streamSeq: message.streamSeq }, 'bus handler failed after its time bound'))
      .finally(() => this.overdue.delete(settled));
    this.overdue.add(settled);
  }

  /** Waits for every handler still running, up to stopTimeoutMs; what is left is redelivered after its ack wait. */
  private async drain(): Promise<void> {
    const running = [...this.inFlight, ...this.overdue];
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<'bound'>((resolve) => {
      timer = setTimeout(() => resolve('bound'), this.settings.stopTimeoutMs);
    });
    const result = await Promise.race([Promise.allSettled(running).then(() => 'drained' as const), bound]);
    clearTimeout(timer);
    if (result === 'bound') this.logger.warn({ running: this.inFlight.size + this.overdue.size }, 'bus consumer stopped with handlers still running');
  }
}
