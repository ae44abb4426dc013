// The ledger events on the bus (NATS JetStream, NATS_URLS): each event published to
// `geopay.events.<tenant>.<account>` (`_ledger` for the ledger's own accounts) in the stream
// GEOPAY_EVENTS, with Nats-Msg-Id = the event id, by the outbox feed of the node owning the
// account's shard (consumer `bus`, src/payments/event-feed.ts). The outbox stays the truth:
// while the bus is away the cursor waits and the events wait in PostgreSQL; once it is back
// they are published in order, a repeat within the duplicate window dropped by JetStream and
// a later one by the consumer, which knows the event id.
import type { Logger } from 'pino';
import type { Bus } from '../bus/index.ts';
import { DEFAULT_DUPLICATE_WINDOW_MS, connectBus } from '../bus/index.ts';
import type { StoredEvent } from '../persistence/events.ts';
import { eventId, viewOf } from './events.ts';

export const EVENTS_STREAM = 'GEOPAY_EVENTS';
export const EVENTS_SUBJECTS = 'geopay.events.>';
/** The subject token of events of no tenant (external and suspense accounts). */
const LEDGER_TOKEN = '_ledger';
/** Between two attempts to reach the bus while it is away. */
const RECONNECT_MS = 2_000;

export const eventSubject = (e: Pick<StoredEvent, 'tenantId' | 'accountId'>): string => `geopay.events.${e.tenantId ?? LEDGER_TOKEN}.${e.accountId}`;

export interface EventBusSettings { urls: string[]; replicas: number; nodeId: string; logger: Logger }

export class EventBus {
  private bus: Bus | undefined;
  private connecting: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly s: EventBusSettings) {}

  /** Connects in the background and makes the stream; a bus that is down is retried, the node goes on. */
  start(): void {
    this.connecting = this.connect();
  }

  get connected(): boolean {
    return this.bus !== undefined;
  }

  private async connect(): Promise<void> {
    while (!this.stopped && !this.bus) {
      let bus: Bus | undefined;
      try {
        bus = await connectBus({ urls: this.s.urls, name: this.s.nodeId, logger: this.s.logger });
        await bus.ensureStream({ name: EVENTS_STREAM, subjects: [EVENTS_SUBJECTS], replicas: this.s.replicas, duplicateWindowMs: DEFAULT_DUPLICATE_WINDOW_MS });
        if (this.stopped) await bus.close();
        else this.bus = bus;
      } catch (err) {
        await bus?.close().catch(() => undefined);
        this.s.logger.warn({ err }, 'bus not reachable; ledger events wait in the outbox');
        await new Promise((r) => setTimeout(r, RECONNECT_MS).unref());
      }
    }
  }

  /** Publishes one event; throws while the bus is away (the feed keeps its place and retries). */
  async publish(e: StoredEvent): Promise<void> {
    if (!this.bus) throw new Error('the bus is not connected');
    await this.bus.publish(eventSubject(e), JSON.stringify(viewOf(e)), { msgId: eventId(e.accountId, e.n) });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.connecting;
    await this.bus?.close();
  }
}
