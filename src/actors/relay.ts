// The saga's safety net: transfers left `debited` (the credit was never applied, say after a
// crash) are re-delivered to the destination, and `refused` ones back to the source.
// At-least-once delivery; the actors apply each leg exactly once.
import type { Logger } from 'pino';
import type { Pool } from '../persistence/db.ts';
import { inFlightTransfers } from '../persistence/queries.ts';
import type { AccountId, TransferId } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import type { AccountRegistry } from './registry.ts';

export class Relay {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly inProgress = new Set<string>();
  redelivered = 0;

  constructor(
    private readonly pool: Pool,
    private readonly registry: AccountRegistry,
    private readonly opts: { intervalMs: number; minAgeMs: number; batch: number },
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.runOnce(), this.opts.intervalMs);
    this.timer.unref();
    void this.runOnce();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** One pass over the in-flight transfers; returns how many it delivered. */
  async runOnce(minAgeMs = this.opts.minAgeMs): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      const todo = (await inFlightTransfers(this.pool, minAgeMs, this.opts.batch)).filter((t) => !this.inProgress.has(t.id));
      await Promise.all(todo.map(async (t) => {
        this.inProgress.add(t.id);
        try {
          const r = t.state === 'debited'
            ? await this.registry.deliverCredit({ id: t.id as TransferId, destinationId: t.destinationId as AccountId, amount: t.amount, currency: t.currency as Currency }, true)
            : await this.registry.deliverReturn({ id: t.id as TransferId, sourceId: t.sourceId as AccountId, amount: t.amount }, true);
          if (r.type === 'error') this.logger.warn({ transfer: t.id, code: r.error.code }, 'relay delivery failed');
          else this.redelivered++;
        } finally {
          this.inProgress.delete(t.id);
        }
      }));
      if (todo.length > 0) this.logger.info({ count: todo.length }, 'relay re-delivered transfers');
      return todo.length;
    } catch (err) {
      this.logger.warn({ err }, 'relay pass failed');
      return 0;
    } finally {
      this.running = false;
    }
  }
}
