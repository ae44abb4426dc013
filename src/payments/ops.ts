// The ops page's data (GET /v1/ops), gathered by the node that serves it: the cluster map by
// region, each node's transfers/s and p99 from its own sampled counters, the deepest
// mailboxes, the transfers in flight. A peer's figures come from its summary, asked through a
// port (the cluster's Forwarder, signed); one that does not answer within PEER_TIMEOUT_MS is
// shown as unreachable, so a stalled node never stalls the page that should show it.
import type { AccountRegistry } from '../actors/registry.ts';
import type { MemberView, Ownership } from '../cluster/ownership.ts';
import type { Buckets, WindowDelta } from '../observability/window.ts';
import { mergeBuckets, quantile, ratePerS } from '../observability/window.ts';
import type { ClusterMap, Inspection } from './inspection.ts';

/** The page's window: long enough to smooth a burst, short enough to show a stall within seconds. */
export const OPS_WINDOW_MS = 10_000;
/** The longest the page waits for a peer: it polls every 2 s, and the others' figures must not wait for one. */
const PEER_TIMEOUT_MS = 1_000;
/** Hot accounts each node reports, and the page shows, deepest first. */
const HOT_PER_NODE = 10;

/** How this node asks a peer for its summary (src/cluster/forward.ts); `error` says why there is none. */
export interface OpsPeers {
  opsSummary(url: string, timeoutMs: number): Promise<{ body: unknown } | { error: string }>;
}

/** One node's own figures: what a peer answers on GET /internal/v1/ops/summary. */
export interface NodeSummary {
  nodeId: string;
  region: string;
  /** Counter increases over the last OPS_WINDOW_MS (shorter just after start); null before two samples. */
  window: WindowDelta | null;
  hot: { accountId: string; depth: number }[];
  /** The leases this node holds, aged by its own clock (no skew between nodes in the figures). */
  leases: { shard: string; epoch: string; ageMs: number | null; expiresInMs: number | null }[];
}

export interface ShardView {
  id: string; region: string; epoch: string; owner: string | null; ownerLive: boolean;
  /** When `owner` took the shard (bumped its epoch). */
  takenAt: string;
  /** Since the owner last took or extended the lease, and until it runs out; null when no live owner reports it. */
  leaseAgeMs: number | null; leaseExpiresInMs: number | null;
}

export interface NodeView {
  nodeId: string; region: string; self: boolean; heartbeatAgeMs: number;
  reachable: boolean; error: string | null;
  windowS: number | null; transfersPerS: number | null; p99Ms: number | null;
  /** The shards this node owns (it is their live owner in the shards table). */
  shards: ShardView[];
}

export interface RegionView { region: string; nodes: NodeView[]; shards: number; unowned: ShardView[] }

export interface OpsPage {
  at: string;
  servedBy: string;
  windowS: number;
  totals: { regions: number; nodes: number; shards: number; unreachable: number; transfersPerS: number | null; p99Ms: number | null };
  regions: RegionView[];
  hotAccounts: { accountId: string; depth: number; nodeId: string }[];
  /** In this node's database: debited and not yet settled or returned. */
  inFlight: { count: number; oldestAgeS: number };
  /** Webhook deliveries waiting for a 2xx, every tenant's (they share one queue); null when it could not be read, never a made-up 0. */
  webhookBacklog: number | null;
}

export interface OpsDeps {
  ownership: Pick<Ownership, 'nodeId' | 'region' | 'shards' | 'members'>;
  registry: Pick<AccountRegistry, 'hottest'>;
  inspection: Pick<Inspection, 'cluster'>;
  inFlight: () => Promise<{ count: number; oldestAgeS: number }>;
  /** Webhook deliveries pending (cached by the caller). */
  webhookBacklog: () => Promise<number>;
  /** This node's counters over the window (src/observability/sampler.ts). */
  window: () => WindowDelta | undefined;
  peers: OpsPeers | undefined;
  leaseTtlMs: number;
}

type Gathered = NodeSummary | { error: string };

export class Ops {
  constructor(private readonly deps: OpsDeps) {}

  /** This node's figures, now. */
  summary(): NodeSummary {
    const { ownership, registry, leaseTtlMs } = this.deps;
    const now = Date.now();
    return {
      nodeId: ownership.nodeId,
      region: ownership.region,
      window: this.deps.window() ?? null,
      hot: registry.hottest(HOT_PER_NODE).map((h) => ({ accountId: h.id, depth: h.depth })),
      leases: ownership.shards().map((s) => {
        const expiresInMs = s.leaseExpiresAt === null ? null : Math.round(Date.parse(s.leaseExpiresAt) - now);
        return { shard: s.shard, epoch: s.epoch.toString(), expiresInMs, ageMs: expiresInMs === null ? null : Math.max(0, leaseTtlMs - expiresInMs) };
      }),
    };
  }

  /** The page's document: the map and the in-flight figures from the database, every live node's summary. */
  async page(): Promise<OpsPage> {
    const members = this.deps.ownership.members();
    const [map, inFlight, summaries, webhookBacklog] = await Promise.all([
      this.deps.inspection.cluster(),
      this.deps.inFlight(),
      Promise.all(members.map(async (m) => [m.nodeId, await this.gather(m)] as const)),
      this.deps.webhookBacklog().catch(() => null),
    ]);
    return assemblePage({ map, inFlight, summaries: new Map(summaries), servedBy: this.deps.ownership.nodeId, now: Date.now(), webhookBacklog });
  }

  private async gather(member: MemberView): Promise<Gathered> {
    if (member.nodeId === this.deps.ownership.nodeId) return this.summary();
    const { peers } = this.deps;
    if (!peers || member.url === '') return { error: 'no internal URL to ask' };
    // The port bounds its own wait; this bound holds whatever the port does.
    const answer = await within(peers.opsSummary(member.url, PEER_TIMEOUT_MS), PEER_TIMEOUT_MS + 100);
    if (answer === undefined) return { error: 'timeout' };
    if ('error' in answer) return answer;
    const summary = parseSummary(answer.body);
    if (!summary) return { error: 'unreadable summary' };
    // Another process now listening at a departed member's address is not that member.
    return summary.nodeId === member.nodeId ? summary : { error: `answered as ${summary.nodeId}` };
  }
}

/** `promise`'s value, or undefined once `ms` have passed. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => { timer = setTimeout(resolve, ms, undefined); });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

const round = (x: number, digits: number): number => Number(x.toFixed(digits));
const p99Ms = (b: Buckets): number | null => {
  const s = quantile(0.99, b);
  return s === null ? null : round(s * 1_000, 1);
};

/** The document from its parts; pure, so that a test can feed it any cluster. */
export function assemblePage(input: {
  map: ClusterMap; inFlight: OpsPage['inFlight']; summaries: ReadonlyMap<string, Gathered>; servedBy: string; now: number; webhookBacklog: number | null;
}): OpsPage {
  const { map, summaries } = input;
  const reported = (id: string): NodeSummary | undefined => {
    const s = summaries.get(id);
    return s && !('error' in s) ? s : undefined;
  };
  const leases = new Map(map.nodes.flatMap((n) => (reported(n.nodeId)?.leases ?? []).map((l) => [`${n.nodeId} ${l.shard}`, l] as const)));
  const shards: ShardView[] = map.shards.map((s) => {
    const lease = s.owner !== null && s.ownerLive ? leases.get(`${s.owner} ${s.id}`) : undefined;
    return {
      id: s.id, region: s.region, epoch: s.epoch, owner: s.owner, ownerLive: s.ownerLive, takenAt: s.updatedAt,
      leaseAgeMs: lease?.ageMs ?? null, leaseExpiresInMs: lease?.expiresInMs ?? null,
    };
  });
  const nodes = map.nodes.map((m): NodeView => nodeView(m, summaries.get(m.nodeId), input.servedBy, shards.filter((s) => s.ownerLive && s.owner === m.nodeId)));
  const regionNames = [...new Set([...map.nodes.map((n) => n.region), ...map.shards.map((s) => s.region)])].sort();
  const regions = regionNames.map((region): RegionView => ({
    region,
    nodes: nodes.filter((n) => n.region === region),
    shards: shards.filter((s) => s.region === region).length,
    unowned: shards.filter((s) => s.region === region && !s.ownerLive),
  }));
  const windows = map.nodes.flatMap((n) => reported(n.nodeId)?.window ?? []);
  const merged = mergeBuckets(windows);
  return {
    at: new Date(input.now).toISOString(),
    servedBy: input.servedBy,
    windowS: OPS_WINDOW_MS / 1_000,
    totals: {
      regions: regions.length, nodes: nodes.length, shards: shards.length, unreachable: nodes.filter((n) => !n.reachable).length,
      transfersPerS: windows.length === 0 ? null : round(windows.reduce((sum, w) => sum + ratePerS(w), 0), 2),
      p99Ms: merged ? p99Ms(merged) : null,
    },
    regions,
    hotAccounts: map.nodes
      .flatMap((n) => (reported(n.nodeId)?.hot ?? []).map((h) => ({ ...h, nodeId: n.nodeId })))
      .sort((a, b) => b.depth - a.depth || a.accountId.localeCompare(b.accountId))
      .slice(0, HOT_PER_NODE),
    inFlight: input.inFlight,
    webhookBacklog: input.webhookBacklog,
  };
}

function nodeView(m: ClusterMap['nodes'][number], gathered: Gathered | undefined, servedBy: string, shards: ShardView[]): NodeView {
  const base = { nodeId: m.nodeId, region: m.region, self: m.nodeId === servedBy, heartbeatAgeMs: m.heartbeatAgeMs, shards };
  if (!gathered || 'error' in gathered) {
    // A member that joined between the two reads was not asked: unknown, like one that did not answer.
    return { ...base, reachable: false, error: gathered?.error ?? 'not asked', windowS: null, transfersPerS: null, p99Ms: null };
  }
  const w = gathered.window;
  return {
    ...base, reachable: true, error: null,
    windowS: w ? round(w.seconds, 1) : null, transfersPerS: w ? round(ratePerS(w), 2) : null, p99Ms: w ? p99Ms(w) : null,
  };
}

const isNumbers = (x: unknown): x is number[] => Array.isArray(x) && x.every((v) => typeof v === 'number' && Number.isFinite(v));
const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const orNull = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);

/** A peer's summary as sent, checked field by field (another version's may differ); undefined when unusable. */
export function parseSummary(body: unknown): NodeSummary | undefined {
  if (!isRecord(body) || typeof body.nodeId !== 'string' || typeof body.region !== 'string') return undefined;
  if (!Array.isArray(body.hot) || !Array.isArray(body.leases)) return undefined;
  const w = body.window;
  let window: WindowDelta | null = null;
  if (isRecord(w)) {
    const { seconds, transfers, bounds, counts } = w;
    if (typeof seconds !== 'number' || typeof transfers !== 'number' || !isNumbers(bounds) || !isNumbers(counts) || counts.length !== bounds.length + 1) return undefined;
    window = { seconds, transfers, bounds, counts };
  } else if (w !== null) {
    return undefined;
  }
  const hot = body.hot.filter(isRecord).flatMap((h) => (typeof h.accountId === 'string' && typeof h.depth === 'number' ? [{ accountId: h.accountId, depth: h.depth }] : []));
  const leases = body.leases.filter(isRecord).flatMap((l) => (typeof l.shard === 'string' && typeof l.epoch === 'string'
    ? [{ shard: l.shard, epoch: l.epoch, ageMs: orNull(l.ageMs), expiresInMs: orNull(l.expiresInMs) }] : []));
  return { nodeId: body.nodeId, region: body.region, window, hot, leases };
}
