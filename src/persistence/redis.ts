// The node's Redis client (today: the rate limiter's shared counters). Every call is bounded:
// a dead or hung Redis costs a request at most the command timeout, never a crash, a hang or
// a queue of commands waiting for a reconnect.
import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/** A client that connects in the background; commands fail fast while it is not connected. */
export function createRedis(url: string, opts: { commandTimeoutMs: number; logger: Logger }): Redis {
  const target = new URL(url);
  const log = opts.logger.child({ redis: `${target.hostname}:${target.port || '6379'}` }); // never the password
  const redis = new Redis(url, {
    lazyConnect: true,
    // While disconnected a command fails at once rather than waiting in a queue for Redis.
    enableOfflineQueue: false,
    // A command cut off by a disconnect fails; it is not re-sent later.
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // A Redis that accepts the connection but does not answer (stopped, overloaded).
    commandTimeout: opts.commandTimeoutMs,
    connectTimeout: 1_000,
    // Reconnect for ever, at most every 2 s.
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
  });
  // Without a listener an 'error' event would crash the process. Reconnect attempts fail
  // every 2 s while Redis is down: log the first failure of an outage, then its end.
  let down = false;
  redis.on('error', (err: Error) => {
    if (down) return;
    down = true;
    log.warn({ err }, 'redis unavailable');
  });
  redis.on('ready', () => {
    if (down) log.info('redis available again');
    down = false;
  });
  return redis;
}

/** Connects, waiting at most timeoutMs: a node starts without Redis, which keeps retrying. */
export async function connectRedis(redis: Redis, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); });
  try {
    return await Promise.race([redis.connect().then(() => true, () => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
