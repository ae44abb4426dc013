// The independent Redis masters behind shard leases and membership: one fail-fast client per
// master (createRedis: no offline queue, no retried commands, a command timeout, reconnects
// with backoff). Start-up connects them in parallel and never waits longer than a bound: a
// node starts with masters down and the clients keep reconnecting in the background.
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { connectRedis, createRedis } from '../persistence/redis.ts';

export interface RedisMastersOptions {
  urls: string[];
  commandTimeoutMs: number;
  logger: Logger;
  /** Bound on start(); default 1 s, the clients' own connect timeout. */
  connectTimeoutMs?: number;
}

export class RedisMasters {
  readonly clients: readonly Redis[];
  /** Masters that must agree: a strict majority of all of them, reachable or not. */
  readonly quorum: number;
  private readonly connectTimeoutMs: number;
  private connecting: Promise<number> | undefined;
  private closing: Promise<void> | undefined;

  constructor(opts: RedisMastersOptions) {
    assert.ok(opts.urls.length > 0, 'at least one Redis master');
    assert.ok(Number.isInteger(opts.commandTimeoutMs) && opts.commandTimeoutMs > 0);
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 1_000;
    this.clients = opts.urls.map((url) => createRedis(url, { commandTimeoutMs: opts.commandTimeoutMs, logger: opts.logger }));
    this.quorum = Math.floor(this.clients.length / 2) + 1;
  }

  /** Connects every master, waiting at most the connect timeout; answers how many are up. Idempotent. */
  connect(): Promise<number> {
    this.connecting ??= Promise.all(this.clients.map((c) => connectRedis(c, this.connectTimeoutMs))).then((ok) => ok.filter(Boolean).length);
    return this.connecting;
  }

  /** Closes every client at once (no QUIT round trip that a dead master would make us wait for). Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const c of this.clients) c.disconnect(false);
    })();
    return this.closing;
  }
}
