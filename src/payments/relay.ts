// The saga's safety net: transfers left `debited` (the credit was never applied, say after a
// crash) are re-delivered to the destination, and `refused` ones back to the source.
// At-least-once delivery; the actors apply each leg exactly once.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { AccountId, HoldId, TenantId, TransferId } from '../domain/ids.ts';
import { makeTransferId, uuidv7Hex } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import type { DueHold, Repositories } from '../persistence/repositories.ts';

export class Relay {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly inProgress = new Set<string>();
  redelivered = 0;

  constructor(
    private readonly repos: Pick<Repositories, 'transfers' | 'holds' | 'groups'>,
    private readonly registry: AccountRegistry,
    private readonly opts: { intervalMs: number; minAgeMs: number; batch: number; clock: () => number; mine?: (accountId: string) => boolean },
    private readonly logger: Logger,
  ) {}

  start(): void {
    const pass = () => void this.runOnce().then(() => this.expireHolds());
    this.timer = setInterval(pass, this.opts.intervalMs);
    this.timer.unref();
    pass();
  }

  /** Releases holds past their deadline, on their source actor. Returns how many it sent. */
  async expireHolds(): Promise<number> {
    try {
      const now = new Date(this.opts.clock()).toISOString();
      const rows = await this.repos.holds.due(now, this.opts.batch);
      const mine = this.opts.mine ?? (() => true);
      await Promise.all(rows.filter((h) => mine(h.sourceId)).map((h) => this.expireHold(h, now)));
      return rows.length;
    } catch (err) {
      this.logger.warn({ err }, 'hold expiry pass failed');
      return 0;
    }
  }

  private async expireHold(h: DueHold, now: string): Promise<void> {
    const holdId = h.id as HoldId;
    // A linked group's hold follows the group's decision; an undecided group is aborted
    // here, and the coordinator, finding 'abort', releases the rest.
    const decision = h.groupId ? await this.repos.groups.decide(h.groupId, 'abort') : 'abort';
    const r = decision === 'commit'
      ? await this.registry.send(h.sourceId as AccountId, {
        cmd: { type: 'Capture', holdId, transferId: makeTransferId(uuidv7Hex(this.opts.clock(), randomBytes(10))), amount: undefined, at: now, decided: true },
        transfer: { destinationId: h.destinationId as AccountId, kind: 'capture', tenantId: h.tenantId as TenantId | null, metadata: null },
      })
      : await this.registry.send(h.sourceId as AccountId, { cmd: { type: 'Expire', holdId, at: now } });
    if (r.type === 'error') this.logger.warn({ hold: h.id, code: r.error.code }, 'hold expiry failed; next pass retries');
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** One pass over the in-flight transfers; returns how many it delivered. */
  async runOnce(minAgeMs = this.opts.minAgeMs): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      const mine = this.opts.mine ?? (() => true);
      // A debited transfer is the source owner's to finish, a refused one too (it returns to the source).
      const todo = (await this.repos.transfers.inFlight(minAgeMs, this.opts.batch)).filter((t) => !this.inProgress.has(t.id) && mine(t.sourceId));
      // A bounded number at a time: a backlog aimed at one hot account must not fill its mailbox.
      await inBatches(todo, 32, async (t) => {
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
      });
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

async function inBatches<T>(items: T[], size: number, fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}
