// The bus as the rest of geopay sees it: one NATS connection per node that reconnects forever,
// with idempotent stream and consumer setup, deduplicated publishing and durable pull consumers
// over it. Client: @nats-io/transport-node + @nats-io/jetstream 3.x (docs/bus.md says why).
// Every wait has a bound: the first connect, each JetStream API call, each publish ack.
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import assert from 'node:assert/strict';
import type { Logger } from 'pino';
import { startConsumer, type ConsumeOptions, type ConsumerRunner } from './consumer.ts';
import type { MessageHandler } from './message.ts';
import { publish, type PublishAck, type PublishOptions } from './publish.ts';
import { ensureConsumer, ensureStream, type ConsumerSpec, type StreamSpec, type StreamSummary } from './streams.ts';

export interface BusOptions {
  /** nats://host:port of each server of the cluster (NATS_URLS, comma-separated; see parseNatsUrls). */
  urls: readonly string[];
  /** This connection's name as the servers show it (e.g. the node id). */
  name: string;
  logger: Logger;
  /** Bound on connecting to one server at start; connectBus fails once every url failed. Default 5 s. */
  connectTimeoutMs?: number;
  /** Bound on each JetStream API call and each publish's wait for its ack. Default 5 s. */
  requestTimeoutMs?: number;
  /** Publish attempts while no stream answers (a leader election, a restart). Default 3. */
  publishAttempts?: number;
  /** Wait between reconnect attempts to one server (with jitter); attempts never stop. Default 1 s. */
  reconnectWaitMs?: number;
  /** A server that misses two pings in a row is dropped and another tried. Default 10 s. */
  pingIntervalMs?: number;
}

export interface StreamState {
  messages: number;
  firstSeq: number;
  lastSeq: number;
  /** When the oldest message still in the stream was stored; undefined when it is empty. */
  firstAt: Date | undefined;
  /** The server that leads the stream now, on a cluster; undefined on a single server. */
  leader: string | undefined;
}

export interface ConsumerState {
  /** Messages in the stream matching the filter, not yet delivered. */
  pending: number;
  /** Delivered and neither acked nor naked yet. */
  ackPending: number;
  /** Messages delivered more than once and not yet acked. */
  redelivered: number;
}

export interface Bus {
  ensureStream(spec: StreamSpec): Promise<StreamSummary>;
  ensureConsumer(stream: string, spec: ConsumerSpec): Promise<'created' | 'updated' | 'unchanged'>;
  publish(subject: string, payload: Uint8Array | string, opts: PublishOptions): Promise<PublishAck>;
  /** Starts a runner on an existing durable pull consumer (ensureConsumer first). */
  consume(stream: string, durable: string, handler: MessageHandler, opts?: ConsumeOptions): Promise<ConsumerRunner>;
  /**
   * Core NATS, outside any stream: at most once, and dropped when nobody listens. For what is a
   * hint with a fallback (an edge node woken by a transfer's outcome), never for a leg.
   */
  notify(subject: string, payload: string): void;
  /**
   * Listens on a core subject until the returned function is called. The subscription goes to
   * the server with the connection's next write, unconfirmed: a notify that some other client
   * sends at once may come before it and not be heard (callers that need it have a fallback).
   */
  listen(subject: string, onMessage: (data: Uint8Array) => void): () => void;
  /** Whether the connection is up now (not reconnecting). */
  readonly up: boolean;
  streamState(stream: string): Promise<StreamState>;
  consumerState(stream: string, durable: string): Promise<ConsumerState>;
  /** Stops every runner started here (each drains its handlers), then drains and closes the connection. */
  close(): Promise<void>;
}

/** NATS_URLS (`nats://a:4222,nats://b:4222`) as a list; throws on an entry that is not a nats:// or tls:// URL. */
export function parseNatsUrls(raw: string): string[] {
  const urls = raw.split(',').map((u) => u.trim()).filter((u) => u !== '');
  for (const url of urls) {
    if (!URL.canParse(url) || !/^(nats|tls):$/.test(new URL(url).protocol)) throw new Error(`not a nats:// URL: ${url}`);
  }
  return urls;
}

export async function connectBus(opts: BusOptions): Promise<Bus> {
  assert.ok(opts.urls.length > 0, 'connectBus needs at least one url');
  const requestTimeoutMs = opts.requestTimeoutMs ?? 5_000;
  const logger = opts.logger.child({ component: 'bus' });
  const nc = await connect({
    servers: [...opts.urls],
    name: opts.name,
    timeout: opts.connectTimeoutMs ?? 5_000,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: opts.reconnectWaitMs ?? 1_000,
    pingInterval: opts.pingIntervalMs ?? 10_000,
    maxPingOut: 2,
    // Each request (every JetStream publish is one) would otherwise build two Errors up front
    // for their stacks, used only if it fails: 1.6% of a node's busy time in bench:cluster's
    // 3 regions x 2 nodes (node --cpu-prof). A failure is still an error with its cause.
    noAsyncTraces: true,
  });
  logger.info({ server: nc.getServer() }, 'bus connected');
  const jsm = await jetstreamManager(nc, { timeout: requestTimeoutMs });
  const js = jetstream(nc, { timeout: requestTimeoutMs });
  const bus = new NatsBus(nc, js, jsm, logger, { timeoutMs: requestTimeoutMs, attempts: opts.publishAttempts ?? 3 }, requestTimeoutMs);
  void logStatus(nc, logger, (up) => { bus.connected = up; });
  return bus;
}

class NatsBus implements Bus {
  private readonly runners = new Set<ConsumerRunner>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly logger: Logger,
    private readonly publishLimits: { timeoutMs: number; attempts: number },
    private readonly requestTimeoutMs: number,
  ) {}

  ensureStream(spec: StreamSpec): Promise<StreamSummary> {
    return ensureStream(this.jsm, spec);
  }

  ensureConsumer(stream: string, spec: ConsumerSpec): Promise<'created' | 'updated' | 'unchanged'> {
    return ensureConsumer(this.jsm, stream, spec);
  }

  publish(subject: string, payload: Uint8Array | string, opts: PublishOptions): Promise<PublishAck> {
    return publish(this.js, this.publishLimits, subject, payload, opts);
  }

  async consume(stream: string, durable: string, handler: MessageHandler, opts: ConsumeOptions = {}): Promise<ConsumerRunner> {
    const runner = await startConsumer(this.js, stream, durable, handler, opts, this.logger, () => this.nc.isClosed());
    const tracked: ConsumerRunner = {
      stop: async () => {
        this.runners.delete(tracked);
        await runner.stop();
      },
    };
    this.runners.add(tracked);
    return tracked;
  }

  notify(subject: string, payload: string): void {
    if (!this.nc.isClosed()) this.nc.publish(subject, payload);
  }

  listen(subject: string, onMessage: (data: Uint8Array) => void): () => void {
    const sub = this.nc.subscribe(subject, { callback: (err, msg) => { if (!err) onMessage(msg.data); } });
    return () => sub.unsubscribe();
  }

  get up(): boolean {
    return !this.nc.isClosed() && !this.nc.isDraining() && this.connected;
  }

  /** Set by the status watcher: false between a disconnect and the reconnect. */
  connected = true;

  async streamState(stream: string): Promise<StreamState> {
    const { state, cluster } = await this.jsm.streams.info(stream);
    return { messages: state.messages, firstSeq: state.first_seq, lastSeq: state.last_seq, firstAt: state.messages > 0 ? new Date(state.first_ts) : undefined, leader: cluster?.leader || undefined };
  }

  async consumerState(stream: string, durable: string): Promise<ConsumerState> {
    const info = await this.jsm.consumers.info(stream, durable);
    return { pending: info.num_pending, ackPending: info.num_ack_pending, redelivered: info.num_redelivered };
  }

  async close(): Promise<void> {
    await Promise.all([...this.runners].map((r) => r.stop()));
    if (this.nc.isClosed()) return;
    // drain() flushes what is buffered (acks, naks) first; while disconnected it could wait for a
    // reconnect that never comes, so past the bound the connection is just closed.
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<'bound'>((resolve) => {
      timer = setTimeout(() => resolve('bound'), this.requestTimeoutMs);
    });
    const drained = await Promise.race([this.nc.drain().then(() => 'drained' as const, () => 'failed' as const), bound]);
    clearTimeout(timer);
    if (drained !== 'drained') await this.nc.close();
    this.logger.info('bus closed');
  }
}

/** Logs the connection's changes of state and tells whether it is up; the iterator ends when the connection closes. */
async function logStatus(nc: NatsConnection, logger: Logger, connected: (up: boolean) => void): Promise<void> {
  for await (const status of nc.status()) {
    switch (status.type) {
      case 'disconnect':
        connected(false);
        logger.warn({ server: status.server }, 'bus disconnected');
        break;
      case 'reconnect':
        connected(true);
        logger.info({ server: status.server }, 'bus reconnected');
        break;
      case 'ldm':
        logger.warn({ server: status.server }, 'bus server entering lame duck mode');
        break;
      case 'error':
        logger.warn({ err: status.error }, 'bus connection error');
        break;
      case 'staleConnection':
        logger.warn('bus connection stale; reconnecting');
        break;
      default:
        break;
    }
  }
}
