// The dispatcher: claims due deliveries, attempts each once, records the attempt and what it
// leaves the delivery in. Several dispatchers (nodes) may run against one database: the claim
// leases each delivery (SKIP LOCKED, then a lease in next_attempt_at), and a record made after
// a lease was lost is refused. Delivery is at least once: a receiver deduplicates on webhook-id.
import type { Logger } from 'pino';
import type { ClaimedDelivery, DeliveryNext, WebhookStore } from '../persistence/webhooks.ts';
import type { WebhookSettings } from './config.ts';
import { assertSettings } from './config.ts';
import type { Resolver } from './address.ts';
import type { AttemptResult } from './deliver.ts';
import { deliverOnce } from './deliver.ts';
import type { AttemptOutcome } from './retry.ts';

export interface DispatcherDeps {
  store: Pick<WebhookStore, 'deliveries'>;
  settings: WebhookSettings;
  resolve: Resolver;
  clock: () => Date;
  /** In [0, 1), for the jitter. */
  random: () => number;
  logger: Logger;
  /** Told of every attempt recorded (metrics): its outcome, and when its delivery was made. */
  onAttempt?: (a: { outcome: AttemptOutcome['kind']; createdAt: Date; endedAt: Date }) => void;
}

export interface DispatchSummary { claimed: number; delivered: number; retrying: number; failed: number; disabled: number; stale: number; errors: number }

export const DISABLED_BY_GONE = 'gone: the endpoint answered 410';

/** What an outcome leaves the delivery in; `endedAt` is when the attempt ended (its retry wait counts from there). */
export function nextState(outcome: AttemptOutcome, endedAt: Date): DeliveryNext {
  switch (outcome.kind) {
    case 'delivered': return { state: 'delivered' };
    case 'retry': return { state: 'pending', nextAttemptAt: outcome.at, delayMs: Math.max(0, outcome.at.getTime() - endedAt.getTime()) };
    case 'disable': return { state: 'disabled', reason: DISABLED_BY_GONE };
    case 'give_up': return { state: 'failed' };
    default: {
      const unknown: never = outcome;
      throw new Error(`unknown attempt outcome ${JSON.stringify(unknown)}`);
    }
  }
}

async function attemptAndRecord(deps: DispatcherDeps, d: ClaimedDelivery): Promise<{ result: AttemptResult; recorded: 'recorded' | 'stale' }> {
  const s = deps.settings;
  const result = await deliverOnce(d.endpoint, d, {
    timeoutMs: s.timeoutMs, allowPrivate: s.allowPrivate, resolve: deps.resolve, policy: s.retry, random: deps.random, clock: deps.clock, excerptBytes: s.excerptBytes,
  });
  const recorded = await deps.store.deliveries.record({
    deliveryId: d.id, claimedAttempts: d.attempts, at: result.at, status: result.status, durationMs: result.durationMs,
    error: result.error, responseExcerpt: result.responseExcerpt, next: nextState(result.outcome, result.endedAt),
  });
  deps.logger.debug({ deliveryId: d.id, endpointId: d.endpoint.id, attempt: d.attempts + 1, status: result.status, outcome: result.outcome.kind, recorded }, 'webhook attempt');
  if (recorded === 'recorded') deps.onAttempt?.({ outcome: result.outcome.kind, createdAt: d.createdAt, endedAt: result.endedAt });
  return { result, recorded };
}

/** One round: claim up to batchSize due deliveries and attempt them concurrently. */
export async function dispatchDue(deps: DispatcherDeps): Promise<DispatchSummary> {
  const claimed = await deps.store.deliveries.claimDue({ now: deps.clock(), limit: deps.settings.batchSize, leaseMs: deps.settings.leaseMs });
  const summary: DispatchSummary = { claimed: claimed.length, delivered: 0, retrying: 0, failed: 0, disabled: 0, stale: 0, errors: 0 };
  const settled = await Promise.allSettled(claimed.map((d) => attemptAndRecord(deps, d)));
  for (const [i, s] of settled.entries()) {
    if (s.status === 'rejected') {
      // The record could not be written (database down), or a bug of ours surfaced: the lease
      // lapses and the delivery is attempted again. One bad row must not stop every endpoint's deliveries.
      summary.errors++;
      deps.logger.error({ err: s.reason, deliveryId: claimed[i]!.id }, 'webhook attempt not recorded');
    } else if (s.value.recorded === 'stale') {
      summary.stale++;
    } else {
      const kind = s.value.result.outcome.kind;
      if (kind === 'delivered') summary.delivered++;
      else if (kind === 'retry') summary.retrying++;
      else if (kind === 'give_up') summary.failed++;
      else summary.disabled++;
    }
  }
  return summary;
}

/** dispatchDue in a loop: at once again while batches come back full, else after pollMs or a nudge. */
export class WebhookDispatcher {
  private running = false;
  /** A nudge that came while a round ran: that round's claim may have missed what it announced. */
  private nudged = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly deps: DispatcherDeps) {
    assertSettings(deps.settings);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Something was enqueued: look now rather than at the next poll. */
  nudge(): void {
    this.nudged = true;
    this.wake?.();
  }

  /** Stops claiming; resolves once the attempts in flight are recorded. */
  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    while (this.running) {
      this.nudged = false;
      let full = false;
      try {
        full = (await dispatchDue(this.deps)).claimed >= this.deps.settings.batchSize;
      } catch (err) {
        this.deps.logger.warn({ err }, 'webhook claim failed');
      }
      if (!full && this.running && !this.nudged) await this.pause();
    }
  }

  private pause(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, this.deps.settings.pollMs);
      this.wake = done;
    });
  }
}
