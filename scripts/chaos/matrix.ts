// The chaos matrix in the order, and its short version for `npm test`.
import { clockJump } from './clock.ts';
import type { Fault } from './faults.ts';
import { handoverCrash, killOwner, natsRestart, pauseOwner, pgDown, pgRestart, redisAmnesia, redisMajority, redisOne, spike } from './faults.ts';
import { latency, oldOwnerReturns, partition } from './partition.ts';

export const FAULTS: readonly Fault[] = [
  killOwner, pauseOwner, redisOne, redisMajority, redisAmnesia, pgRestart, pgDown, natsRestart,
  partition, latency, clockJump, handoverCrash, oldOwnerReturns, spike,
];

/** The short version in `npm test`: an owner's death, the Redis majority lost, a region's PostgreSQL restarted. */
export const SHORT = ['kill-owner', 'redis-majority', 'pg-restart'];
