// The webhook settings with their defaults, units in the names. config/settings.ts reads the
// environment (docs/webhooks.md lists the variables to add there); this module only holds the
// shape and the defaults the composition root starts from, and checks a set before use.
import assert from 'node:assert/strict';
import type { RetryPolicy } from './retry.ts';
import { DEFAULT_RETRY_POLICY, assertPolicy } from './retry.ts';

export interface WebhookSettings {
  /** WEBHOOK_ALLOW_PRIVATE: loopback, private and other non-public addresses, and plain http, allowed (tests, development). */
  allowPrivate: boolean;
  /** One attempt, DNS to the last byte of the excerpt; the spec recommends 15-30 s. */
  timeoutMs: number;
  retry: RetryPolicy;
  /** How long a rotated-out secret still signs (and so still verifies at the receiver). */
  secretOverlapMs: number;
  /** Deliveries claimed and attempted at once by one dispatcher. */
  batchSize: number;
  /** A claimed delivery is not claimed again for this long: longer than an attempt can take. */
  leaseMs: number;
  /** The dispatcher's wait when nothing was due. */
  pollMs: number;
  /** Bytes of a receiver's response body kept with its attempt. */
  excerptBytes: number;
}

export const DEFAULT_WEBHOOK_SETTINGS: Readonly<WebhookSettings> = Object.freeze({
  allowPrivate: false,
  timeoutMs: 15_000,
  retry: DEFAULT_RETRY_POLICY,
  secretOverlapMs: 86_400_000,
  batchSize: 32,
  leaseMs: 60_000,
  pollMs: 1_000,
  excerptBytes: 1_024,
});

export function assertSettings(s: WebhookSettings): void {
  assertPolicy(s.retry);
  assert.ok(Number.isInteger(s.timeoutMs) && s.timeoutMs > 0, 'timeoutMs > 0');
  // A lease that lapses while its attempt still runs would let a second dispatcher send the same delivery concurrently.
  assert.ok(Number.isInteger(s.leaseMs) && s.leaseMs > s.timeoutMs, 'leaseMs > timeoutMs');
  assert.ok(Number.isInteger(s.batchSize) && s.batchSize >= 1 && s.batchSize <= 1_000, 'batchSize in 1-1000');
  assert.ok(Number.isInteger(s.pollMs) && s.pollMs > 0, 'pollMs > 0');
  assert.ok(Number.isInteger(s.excerptBytes) && s.excerptBytes >= 0 && s.excerptBytes <= 65_536, 'excerptBytes in 0-65536');
  assert.ok(Number.isInteger(s.secretOverlapMs) && s.secretOverlapMs >= 0, 'secretOverlapMs >= 0');
}
