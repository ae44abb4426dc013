// The faults of the chaos matrix that need the world on a network of namespaces
// (test/helpers/netns.ts): a region cut off from the others and from a majority of the Redis
// masters (fault 9), latency between regions (10), and an owner cut off from its peers and
// from the Redis majority while it can still reach its database and its clients, returning
// with writes queued (13). Region r's hosts are its two nodes and Redis master r.
import { setTimeout as sleep } from 'node:timers/promises';
import { busiestOwner, NO_WINDOW_MS, outageMs, ownerBound, regionAccounts, type Fault } from './faults.ts';
import { hostOf, REGIONS, regionHosts, type World } from './world.ts';

const LATENCY_MS = 50;

const networkOf = (w: World) => {
  if (!w.network) throw new Error('this fault needs the world on a network of namespaces');
  return w.network;
};

export const partition: Fault = {
  id: 'partition',
  network: true,
  async run({ world, seconds }) {
    const net = networkOf(world);
    const ms = outageMs(seconds);
    const [cut, ...rest] = REGIONS;
    // Both directions: every packet between eu's hosts and the others' is dropped, silently.
    await net.partition(regionHosts(cut), rest.flatMap(regionHosts));
    await sleep(ms);
    await net.heal();
    await world.heal();
    return { action: `${cut} (its nodes and Redis master 0) cut off from ${rest.join(', ')} and Redis masters 1 and 2 for ${ms} ms, both directions`, affected: regionAccounts(world, cut) };
  },
  // eu's owners lose their leases (no majority) within a TTL and nobody may take them while eu
  // is cut off (REGION_FAILOVER=deny): its accounts wait for the heal, then for the leases.
  boundMs: (w, c) => outageMs(c.seconds) + w.leaseTtlMs + 2_000,
};

export const latency: Fault = {
  id: 'latency',
  network: true,
  async run({ world, seconds }) {
    const net = networkOf(world);
    const ms = outageMs(seconds);
    for (const [i, a] of REGIONS.entries()) {
      for (const b of REGIONS.slice(i + 1)) await net.delay(regionHosts(a), regionHosts(b), LATENCY_MS);
    }
    await sleep(ms);
    await net.undelay();
    return { action: `${LATENCY_MS} ms each way between every two regions (nodes and Redis masters) for ${ms} ms; TTL and timeouts at their defaults` };
  },
  boundMs: () => NO_WINDOW_MS,
};

export const oldOwnerReturns: Fault = {
  id: 'old-owner-returns',
  network: true,
  async run({ world }) {
    const net = networkOf(world);
    const { node, shard, affected } = await busiestOwner(world);
    const host = hostOf(node.nodeId);
    const everyoneElse = Object.keys(net.hosts).filter((h) => h !== host);
    // Its database and its clients (the root namespace) stay reachable: it goes on taking
    // writes until its lease runs out, and any it commits later must be fenced.
    await net.partition([host], everyoneElse);
    await sleep(world.leaseTtlMs + 3_000);
    await net.heal();
    await world.heal();
    return { action: `${node.nodeId}, owner of ${shard}, cut off from every peer and Redis master (not from its database or clients) for TTL + 3 s, then back`, affected };
  },
  boundMs: ownerBound,
};
