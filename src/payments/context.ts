// What every payments workflow works with, built once at the composition root: the account
// registry (the actors), the saga's outcome waiters, the repositories, the account directory,
// in-process idempotency, settings and business time.
import type { Config } from '../../config/settings.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import type { Repositories } from '../persistence/repositories.ts';
import type { Directory } from './directory.ts';
import type { InFlightKeys } from './in-flight-keys.ts';
import type { Saga } from './saga.ts';
import type { Metrics } from '../observability/metrics.ts';

export interface PaymentsContext {
  config: Config;
  registry: AccountRegistry;
  saga: Saga;
  repos: Repositories;
  directory: Directory;
  keys: InFlightKeys;
  /** Business time in ms (command times, hold deadlines); tests control it. */
  clock: () => number;
  metrics: Metrics;
}
