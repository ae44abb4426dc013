// From the ledger event outbox to webhook deliveries, in-process. Each node takes the events
// of the shards it owns, in each shard's order, and enqueues one delivery per matching
// endpoint of the event's tenant (idempotent per endpoint and event), then moves the shard's
// cursor past them (consumer `webhooks`, src/persistence/events.ts). A crash between the two
// enqueues them again, which changes nothing: at least once into the queue, exactly once per
// (endpoint, event) in it. A shard handed over goes on from its cursor at its new owner.
import type { Logger } from 'pino';
import type { PublishedMark, StoredEvent } from '../persistence/events.ts';
import type { RegionRepositories } from '../persistence/repositories.ts';
import type { WebhookEvent } from '../webhooks/endpoints.ts';
import { eventId } from './events.ts';

/** The cursor's name in ledger_event_cursors. */
export const WEBHOOK_CONSUMER = 'webhooks';
/** Events taken per shard and pass. */
const PAGE = 200;

/** A region database and the shards of it this node owns. */
export interface EventSource { repos: Pick<RegionRepositories, 'events'>; shards: string[] }

export interface WebhookFeedDeps {
  sources: () => EventSource[];
  /** Fans one event out to its tenant's matching endpoints. */
  enqueue: (e: WebhookEvent) => Promise<unknown>;
  /** Something was enqueued: the dispatcher looks now. */
  delivered: () => void;
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

export class WebhookFeed {
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private lastStart = 0;

  constructor(private readonly deps: WebhookFeedDeps) {}

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
        this.deps.logger.warn({ err }, 'webhook feed pass failed');
      }
    }
  }

  /** Every event of the source's shards past the cursor, page by page. */
  private async drain(source: EventSource): Promise<void> {
    for (;;) {
      const events = await source.repos.events.unpublished(WEBHOOK_CONSUMER, source.shards, PAGE);
      if (events.length === 0) return;
      let enqueued = false;
      // In each shard's order: an account's deliveries are made in its order.
      for (const e of events) {
        if (e.tenantId === null) continue;
        await this.deps.enqueue(webhookEventOf({ ...e, tenantId: e.tenantId }));
        enqueued = true;
      }
      const last = new Map<string, PublishedMark>();
      const counts = new Map<string, number>();
      for (const e of events) {
        last.set(e.shard, { shard: e.shard, position: e.position });
        counts.set(e.shard, (counts.get(e.shard) ?? 0) + 1);
      }
      await source.repos.events.markPublished(WEBHOOK_CONSUMER, [...last.values()]);
      if (enqueued) this.deps.delivered();
      // A shard that filled its page may have more.
      if (![...counts.values()].some((n) => n >= PAGE)) return;
    }
  }
}
