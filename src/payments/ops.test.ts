// The ops page's document from its parts: grouping by region, each node's figures from its own
// window, lease ages from the owner's summary, a node that did not answer shown as such (and
// the page not waiting for it past its bound), and a peer's summary checked as it arrives.
import { describe, expect, it } from 'vitest';
import type { ShardId } from '../domain/ids.ts';
import type { ClusterMap } from './inspection.ts';
import type { NodeSummary, OpsDeps } from './ops.ts';
import { Ops, assemblePage, parseSummary } from './ops.ts';

const BOUNDS = [0.01, 0.1, 1];

function map(): ClusterMap {
  const member = (nodeId: string, region: string) => ({ nodeId, region, url: `http://${nodeId}`, heartbeatAgeMs: 100, shards: 0 });
  const shard = (id: string, region: string, owner: string | null, ownerLive = true) =>
    ({ id, region, bucket: 0, epoch: '3', owner, ownerLive, updatedAt: '2024-01-01T00:00:00.000Z' });
  return {
    self: { nodeId: 'eu-1', region: 'eu', shardsHeld: [] },
    nodes: [member('eu-1', 'eu'), member('eu-2', 'eu'), member('us-1', 'us')],
    shards: [shard('eu-0', 'eu', 'eu-1'), shard('eu-1', 'eu', 'eu-2'), shard('us-0', 'us', 'us-1'), shard('us-1', 'us', 'us-9', false)],
  };
}

function summary(nodeId: string, region: string, transfers: number, counts: number[], leases: NodeSummary['leases'] = [], hot: NodeSummary['hot'] = []): NodeSummary {
  return { nodeId, region, window: { seconds: 10, transfers, bounds: BOUNDS, counts }, hot, leases };
}

describe('assemblePage', () => {
  const summaries = new Map<string, NodeSummary | { error: string }>([
    ['eu-1', summary('eu-1', 'eu', 50, [100, 100, 100, 100], [{ shard: 'eu-0', epoch: '3', ageMs: 1_200, expiresInMs: 8_800 }], [{ accountId: 'acc_a', depth: 3 }])],
    ['eu-2', { error: 'timeout' }],
    ['us-1', summary('us-1', 'us', 20, [0, 0, 100, 100], [], [{ accountId: 'acc_b', depth: 7 }, { accountId: 'acc_c', depth: 1 }])],
  ]);
  const page = assemblePage({ map: map(), inFlight: { count: 4, oldestAgeS: 2.5 }, summaries, servedBy: 'eu-1', now: Date.parse('2024-01-01T00:01:00Z'), webhookBacklog: 3 });

  it('groups nodes and shards by region, each node with the shards it owns live', () => {
    expect(page.regions.map((r) => [r.region, r.nodes.map((n) => n.nodeId), r.shards])).toEqual([['eu', ['eu-1', 'eu-2'], 2], ['us', ['us-1'], 2]]);
    const [eu1, eu2] = page.regions[0]!.nodes;
    expect(eu1!.shards.map((s) => s.id)).toEqual(['eu-0']);
    expect(eu2!.shards.map((s) => s.id)).toEqual(['eu-1']);
    // Its last owner is gone: in the region's unowned list, on no node.
    expect(page.regions[1]!.unowned.map((s) => s.id)).toEqual(['us-1']);
    expect(page.regions[1]!.nodes[0]!.shards.map((s) => s.id)).toEqual(['us-0']);
    expect(page.totals).toMatchObject({ regions: 2, nodes: 3, shards: 4, unreachable: 1 });
  });

  it('takes lease ages from the owner\'s own summary; none for a node that did not answer', () => {
    const [eu1, eu2] = page.regions[0]!.nodes;
    expect(eu1!.shards[0]).toMatchObject({ epoch: '3', leaseAgeMs: 1_200, leaseExpiresInMs: 8_800, takenAt: '2024-01-01T00:00:00.000Z' });
    expect(eu2!.shards[0]).toMatchObject({ leaseAgeMs: null, leaseExpiresInMs: null });
  });

  it('each node\'s rate and p99 from its window; totals add rates and merge buckets; a silent node has none', () => {
    const nodes = page.regions.flatMap((r) => r.nodes);
    expect(nodes.map((n) => [n.nodeId, n.reachable, n.error, n.transfersPerS, n.p99Ms])).toEqual([
      ['eu-1', true, null, 5, 9.9],
      ['eu-2', false, 'timeout', null, null],
      // All 100 in (0.1 s, 1 s]: the 99th at 0.1 + 0.9 * 0.99 s.
      ['us-1', true, null, 2, 991],
    ]);
    expect(page.totals.transfersPerS).toBe(7);
    // 200 together: rank 198 is the 98th of the 100 in (0.1, 1].
    expect(page.totals.p99Ms).toBe(982);
    expect(nodes.find((n) => n.nodeId === 'eu-1')!.self).toBe(true);
  });

  it('lists the deepest mailboxes of every node that answered, with the node, and passes the rest through', () => {
    expect(page.hotAccounts).toEqual([
      { accountId: 'acc_b', depth: 7, nodeId: 'us-1' }, { accountId: 'acc_a', depth: 3, nodeId: 'eu-1' }, { accountId: 'acc_c', depth: 1, nodeId: 'us-1' },
    ]);
    expect(page.inFlight).toEqual({ count: 4, oldestAgeS: 2.5 });
    expect(page.webhookBacklog).toBe(3);
    expect(page.at).toBe('2024-01-01T00:01:00.000Z');
  });

  it('has no figures where no node has a window yet', () => {
    const empty = new Map([['eu-1', { ...summary('eu-1', 'eu', 0, [0, 0, 0, 0]), window: null }]]);
    const p = assemblePage({ map: map(), inFlight: { count: 0, oldestAgeS: 0 }, summaries: empty, servedBy: 'eu-1', now: 0, webhookBacklog: null });
    expect(p.totals).toMatchObject({ transfersPerS: null, p99Ms: null, unreachable: 2 });
  });
});

describe('parseSummary', () => {
  it('accepts what summary() sends, through JSON', () => {
    const s = summary('us-1', 'us', 3, [1, 2, 3, 3], [{ shard: 'us-0', epoch: '2', ageMs: null, expiresInMs: null }], [{ accountId: 'acc_x', depth: 2 }]);
    expect(parseSummary(JSON.parse(JSON.stringify(s)))).toEqual(s);
    expect(parseSummary({ ...s, window: null })).toEqual({ ...s, window: null });
  });

  it('refuses a summary it cannot read rather than show wrong figures', () => {
    const s = summary('us-1', 'us', 3, [1, 2, 3, 3]);
    for (const bad of [null, 'x', [], { ...s, nodeId: 7 }, { ...s, hot: undefined }, { ...s, window: { ...s.window, counts: [1, 2] } }, { ...s, window: 5 }]) {
      expect(parseSummary(bad), JSON.stringify(bad)).toBeUndefined();
    }
    // Entries it cannot read are dropped one by one.
    expect(parseSummary({ ...s, hot: [{ accountId: 1, depth: 2 }, { accountId: 'acc_y', depth: 1 }] })!.hot).toEqual([{ accountId: 'acc_y', depth: 1 }]);
  });
});

describe('Ops.page', () => {
  const members = map().nodes;
  const deps = (opsSummary: (url: string) => Promise<{ body: unknown } | { error: string }>): OpsDeps => ({
    ownership: { nodeId: 'eu-1', region: 'eu', shards: () => [{ shard: 'eu-0' as ShardId, owner: 'eu-1', epoch: 3n, region: 'eu', nodeId: 'eu-1', leaseExpiresAt: new Date(Date.now() + 7_000).toISOString() }], members: () => members },
    registry: { hottest: () => [] },
    inspection: { cluster: async () => map() },
    inFlight: async () => ({ count: 0, oldestAgeS: 0 }),
    webhookBacklog: async () => 0,
    window: () => undefined,
    peers: { opsSummary: (url) => opsSummary(url) },
    leaseTtlMs: 10_000,
  });

  it('does not wait for a peer that never answers past its bound, and shows it unreachable', async () => {
    const never = new Promise<never>(() => undefined);
    const ops = new Ops(deps(async (url) => (url === 'http://eu-2' ? never : { body: summary(url.slice(7), 'x', 0, [0, 0, 0, 0]) })));
    const t0 = performance.now();
    const page = await ops.page();
    const elapsedMs = performance.now() - t0;
    expect(elapsedMs).toBeLessThan(1_500);
    expect(elapsedMs).toBeGreaterThanOrEqual(1_000);
    const nodes = page.regions.flatMap((r) => r.nodes);
    expect(nodes.map((n) => [n.nodeId, n.reachable, n.error])).toEqual([['eu-1', true, null], ['eu-2', false, 'timeout'], ['us-1', true, null]]);
    // Its own lease, aged by its own clock: taken or extended about 3 s ago.
    const own = nodes[0]!.shards[0]!;
    expect(own.leaseAgeMs).toBeGreaterThanOrEqual(2_900);
    expect(own.leaseAgeMs).toBeLessThanOrEqual(4_500);
  });

  it('does not take another process at a member\'s address for that member', async () => {
    const ops = new Ops(deps(async () => ({ body: summary('someone-else', 'eu', 0, [0, 0, 0, 0]) })));
    const nodes = (await ops.page()).regions.flatMap((r) => r.nodes);
    expect(nodes.filter((n) => !n.self).map((n) => n.error)).toEqual(['answered as someone-else', 'answered as someone-else']);
  });
});
