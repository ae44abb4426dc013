// The ledger event outbox's consumers, in-process: each node takes the events of the shards it
// owns, in each shard's order, hands each to the consumer (enqueue webhook deliveries, publish
// to the bus), then moves that consumer's cursor of the shard past them
// (src/persistence/events.ts). A crash in between hands them over again: at least once, each
// consumer deduplicating by the event id (a delivery per endpoint and event; Nats-Msg-Id). A
// failure stops the shard's page where it is, so a consumer sees each account's events in
// order. A shard handed over goes on from its cursor at its new owner.
import type { Logger } from 'pino';
import { isPassed, type EventInterest, type PublishedMark, type StoredEvent } from '../persistence/events.ts';
import type { RegionRepositories } from '../persistence/repositories.ts';
import type { WebhookEvent } from '../webhooks/endpoints.ts';
import { eventId } from './events.ts';

/** Events taken per shard and pass. */
const PAGE = 200;

/** A region database and the shards of it this node owns. */
export interface EventSource { repos: Pick<RegionRepositories, 'events'>; shards: string[] }

export interface OutboxFeedDeps {
  /** The cursor's name in ledger_event_cursors. */
  consumer: string;
  sources: () => EventSource[];
  /** Takes one event; a throw leaves it (and what follows in its shard) for the next pass. */
  handle: (e: StoredEvent) => Promise<void>;
  /**
   * The events `handle` would act on, asked once a page (none: every event). The others are
   * passed over unread: their cursor moves, they reach no handler.
   */
  interest?: () => Promise<EventInterest | undefined>;
  /** After a page was handed over and its cursor moved. */
  afterPage?: () => void;
  intervalMs: number;
  logger: Logger;
}

/** What a ledger event says to a webhook receiver: its id and order beside what changed. */
export function webhookEventOf(e: StoredEvent & { tenantId: string }): WebhookEvent {
  const id = eventId(e.accountId, e.n);
  return {
    tenantId: e.tenantId, eventId: id, type: e.type, accountId: e.accountId, seq: BigInt(e.seq), occurredAt: new Date(e.createdAt),
    data: { eventId: id, accountId: e.accountId, seq: e.seq, object: e.payload },
  };
}

/** Passes start at most this often however many commits wake the feed: under load one pass carries many commits' events. */
const MIN_GAP_MS = 100;

export class OutboxFeed {
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private lastStart = 0;

  constructor(private readonly deps: OutboxFeedDeps) {}

  start(): void {
    this.timer = setInterval(() => this.wake(), this.deps.intervalMs);
    this.timer.unref();
    this.wake();
  }

  /** A pass soon (MIN_GAP_MS after the last one started), or again after the one running. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      this.lastStart = performance.now();
      this.running = this.passes().finally(() => {
        this.running = undefined;
        if (this.again) this.wake();
      });
    }, Math.max(0, this.lastStart + MIN_GAP_MS - performance.now()));
    this.soon.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    await this.running;
  }

  private async passes(): Promise<void> {
    this.again = false;
    for (const source of this.deps.sources()) {
      if (source.shards.length === 0) continue;
      try {
        await this.drain(source);
      } catch (err) {
        // The control database or the region's down: the cursor stays, the next pass retries.
        this.deps.logger.warn({ err, consumer: this.deps.consumer }, 'event feed pass failed');
      }
    }
  }

  /** Every event of the source's shards past the cursor, page by page. */
  private async drain(source: EventSource): Promise<void> {
    for (;;) {
      const interest = await this.deps.interest?.();
      const events = await source.repos.events.unpublished(this.deps.consumer, source.shards, PAGE, interest);
      if (events.length === 0) return;
      // In each shard's order, so in each account's.
      for (const e of events) if (!isPassed(e)) await this.deps.handle(e);
      const last = new Map<string, PublishedMark>();
      const counts = new Map<string, number>();
      for (const e of events) {
        last.set(e.shard, { shard: e.shard, position: e.position });
        counts.set(e.shard, (counts.get(e.shard) ?? 0) + 1);
      }
      await source.repos.events.markPublished(this.deps.consumer, [...last.values()]);
      this.deps.afterPage?.();
      // A shard that filled its page may have more.
      if (![...counts.values()].some((n) => n >= PAGE)) return;
    }
  }
}
