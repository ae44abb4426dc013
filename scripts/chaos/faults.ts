// The faults of `npm run chaos`, each injected into a running world under load and healed by
// itself: what it breaks, for how long, which accounts it aims at, and the bound its window of
// unavailability is held to. The numbers follow the matrix (docs/tradeoffs.md).
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterNode } from '../../test/helpers/cluster.ts';
import { codeOf } from '../../bench/lib/client.ts';
import type { World } from './world.ts';

export interface FaultContext {
  world: World;
  /** Seconds of load the scenario has: a fault that lasts "a while" scales with it. */
  seconds: number;
  /** Adds to the row's counts (the spike's own requests). */
  extra: { sent: number; acknowledged: number; rateLimited: number; other: number; failures: string[] };
}

export interface Injected {
  action: string;
  /** The accounts the fault aims at, whose window is measured on its own. */
  affected?: { label: string; accounts: Set<string> };
}

export interface Fault {
  id: string;
  /** Runs before the scenario's load starts (a node restarted under libfaketime, ...). */
  prepare?(world: World): Promise<void>;
  /** Needs the world on a network of namespaces (a partition, latency). */
  network?: boolean;
  /** Injects the fault, waits while it lasts, heals it; resolves at the heal. */
  run(ctx: FaultContext): Promise<Injected>;
  /** The longest window the fault may cause, ms. */
  boundMs(world: World, ctx: { seconds: number }): number;
}

/** A node's death or pause is over once its lease expired and another took its shards: TTL + 2 s. */
export const ownerBound = (w: World): number => w.leaseTtlMs + 2_000;
/** Faults that stop no owner: a write may wait out a retry or two, nothing more. */
export const NO_WINDOW_MS = 3_000;

/** The owner of the hot account's shard (the busiest owner) and the run's accounts it owns now. */
export async function busiestOwner(w: World): Promise<{ node: ClusterNode; shard: string; affected: Injected['affected'] }> {
  const { node, shard } = await w.ownerOf(w.hot);
  const accounts = new Set(await w.accountsOwnedBy(node.nodeId));
  return { node, shard, affected: { label: `${node.nodeId}'s shards (${accounts.size} accounts)`, accounts } };
}

/** Down for as long as this scenario allows: a third of its load, between 5 and 20 s. */
export const outageMs = (seconds: number): number => Math.min(20_000, Math.max(5_000, Math.round(seconds * 1000 / 3)));

const killOwner: Fault = {
  id: 'kill-owner',
  async run({ world }) {
    const { node, shard, affected } = await busiestOwner(world);
    await node.kill('SIGKILL');
    // Dead until its lease expired and the survivor took the shards, and a while more under load.
    await sleep(world.leaseTtlMs + 3_000);
    await world.heal();
    return { action: `kill -9 of ${node.nodeId}, owner of ${shard} (the hot account's), restarted after TTL + 3 s`, affected };
  },
  boundMs: ownerBound,
};

const pauseOwner: Fault = {
  id: 'pause-owner',
  async run({ world }) {
    const { node, shard, affected } = await busiestOwner(world);
    node.sigstop();
    await sleep(world.leaseTtlMs + 3_000);
    node.sigcont();
    // Awake with writes queued and a lease it no longer holds: the epoch fence refuses them.
    await world.heal();
    return { action: `SIGSTOP of ${node.nodeId}, owner of ${shard}, for TTL + 3 s, then SIGCONT`, affected };
  },
  boundMs: ownerBound,
};

const redisOne: Fault = {
  id: 'redis-one',
  async run({ world, seconds }) {
    const redis = world.running.redis;
    await redis.kill(0);
    await sleep(outageMs(seconds));
    await redis.restart(0);
    return { action: `kill -9 of Redis master 0 of 3 for ${outageMs(seconds)} ms, restarted empty` };
  },
  boundMs: () => NO_WINDOW_MS,
};

const redisMajority: Fault = {
  id: 'redis-majority',
  async run({ world, seconds }) {
    const redis = world.running.redis;
    await Promise.all([redis.kill(0), redis.kill(1)]);
    await sleep(outageMs(seconds));
    await Promise.all([redis.restart(0), redis.restart(1)]);
    await world.heal();
    return { action: `kill -9 of Redis masters 0 and 1 of 3 for ${outageMs(seconds)} ms, restarted empty` };
  },
  // No lease can be extended without a majority: every owner steps down at its TTL, and writes
  // wait until the masters are back and the leases taken again.
  boundMs: (w, c) => outageMs(c.seconds) + w.leaseTtlMs + 2_000,
};

const redisAmnesia: Fault = {
  id: 'redis-amnesia',
  async run({ world }) {
    const redis = world.running.redis;
    // Master 2 away for a third of a TTL: the leases live on 0 and 1 alone. Then 2 comes back
    // empty and 0 restarts empty (no persistence): a majority of the masters has forgotten
    // the leases their owners still count on, Redlock's known hole. The epoch in PostgreSQL
    // is what stops an old owner's write after another node took the shard.
    await redis.kill(2);
    await sleep(Math.round(world.leaseTtlMs / 3) + 500);
    await redis.restart(2);
    await redis.kill(0);
    await redis.restart(0);
    await sleep(world.leaseTtlMs);
    await world.heal();
    return { action: 'Redis master 2 down for TTL/3 (leases on 0 and 1 alone), back empty, then master 0 restarted empty: a majority forgot the leases' };
  },
  boundMs: ownerBound,
};

const PG_REGION = 'us';

const pgRestart: Fault = {
  id: 'pg-restart',
  async run({ world }) {
    const server = world.running.pgInstances![PG_REGION]!;
    const t0 = performance.now();
    await server.stop();
    await server.start();
    return { action: `restart of ${PG_REGION}'s PostgreSQL (fast shutdown, start: ${Math.round(performance.now() - t0)} ms)`, affected: regionAccounts(world, PG_REGION) };
  },
  boundMs: () => 10_000,
};

/** A region's database down this long, whatever the scenario's length (the matrix says 20 s). */
const PG_DOWN_MS = 20_000;

const pgDown: Fault = {
  id: 'pg-down',
  async run({ world }) {
    const server = world.running.pgInstances![PG_REGION]!;
    await server.stop();
    await sleep(PG_DOWN_MS);
    await server.start();
    return { action: `${PG_REGION}'s PostgreSQL down ${PG_DOWN_MS} ms`, affected: regionAccounts(world, PG_REGION) };
  },
  boundMs: () => PG_DOWN_MS + 10_000,
};

export const regionAccounts = (w: World, region: string): Injected['affected'] =>
  ({ label: `${region}'s accounts`, accounts: new Set(w.accounts[region]) });

const natsRestart: Fault = {
  id: 'nats-restart',
  async run({ world, seconds }) {
    await world.nats.kill9(0);
    await sleep(outageMs(seconds));
    await world.nats.restart(0);
    return { action: `kill -9 of nats-server for ${outageMs(seconds)} ms, restarted on its store` };
  },
  // Writes are acknowledged on their debit: the legs wait in the outbox, no write does.
  boundMs: () => NO_WINDOW_MS,
};

const handoverCrash: Fault = {
  id: 'handover-crash',
  async run({ world }) {
    const { node, shard, affected } = await busiestOwner(world);
    // SIGTERM starts the drain (hand the shards over); the kill lands in the middle of it.
    process.kill(node.pid, 'SIGTERM');
    await sleep(300);
    await node.kill('SIGKILL');
    await sleep(world.leaseTtlMs + 3_000);
    await world.heal();
    return { action: `SIGTERM of ${node.nodeId} (owner of ${shard}), kill -9 300 ms into its drain`, affected };
  },
  boundMs: ownerBound,
};

const spike: Fault = {
  id: 'spike',
  async run(ctx) {
    const { world, seconds } = ctx;
    const limit = world.spikeLimitPerS;
    const forMs = Math.min(10_000, Math.max(3_000, Math.round(seconds * 1000 / 4)));
    await spikeLoad(ctx, limit * 10, forMs);
    return { action: `the spike tenant at 10x its write limit (${limit * 10}/s against ${limit}/s) for ${forMs} ms` };
  },
  boundMs: () => NO_WINDOW_MS,
};

/** Open loop at `rate` for `forMs`: transfers between the spike tenant's accounts, no retries. */
async function spikeLoad(ctx: FaultContext, rate: number, forMs: number): Promise<void> {
  const { world, extra } = ctx;
  const { id, key, accounts } = world.spike;
  const sends: Promise<void>[] = [];
  const t0 = performance.now();
  for (let i = 0; performance.now() - t0 < forMs; i++) {
    const wait = t0 + (i * 1000) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    const nodes = world.running.cluster.live('us');
    const node = nodes[i % nodes.length]!;
    const body = { sourceAccountId: accounts[i % 2]!, destinationAccountId: accounts[(i + 1) % 2]!, amount: '1', currency: 'USD' };
    sends.push(world.client(node).post({ op: 'transfer', path: '/v1/transfers', body, key: `spike-${t0}-${i}`, bearer: key, tenant: id, phase: 'spike' }, undefined, 0).then((r) => {
      extra.sent++;
      if (r.status === 429) {
        extra.rateLimited++;
        if (r.retryAfterS === undefined || codeOf(r.answer) !== 'rate_limited') extra.failures.push(`a 429 without Retry-After or code rate_limited: ${JSON.stringify(r.answer)}`);
      } else if (r.status === 201 || r.status === 202) extra.acknowledged++;
      else extra.other++;
    }));
  }
  await Promise.all(sends);
}

export { killOwner, pauseOwner, redisOne, redisMajority, redisAmnesia, pgRestart, pgDown, natsRestart, handoverCrash, spike };
