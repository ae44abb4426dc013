// The world a chaos run breaks: the local cluster of `npm run cluster` with every part real and
// its own (3 regions x 2 nodes, 3 Redis masters, a PostgreSQL server per region, a nats-server
// carrying the cross-region legs), the run's tenants and accounts, and what the faults need to
// aim: which node owns which account's shard now, and how to bring a node back.
import { randomBytes } from 'node:crypto';
import { regionOf as regionOfAccount, type AccountId } from '../../src/domain/ids.ts';
import type pg from 'pg';
import { startNatsServers, type NatsServers } from '../../test/helpers/nats.ts';
import { clusterMap, waitFor, type ClusterMap, type ClusterNode, type ProcessHost } from '../../test/helpers/cluster.ts';
import { defaultOptions, regionPools, startLocalCluster, type LocalClusterOptions, type RunningCluster } from '../cluster.ts';
import { createNetwork, removeStaleNetworks, requireNetns, type Network } from '../../test/helpers/netns.ts';
import { LoadClient } from '../../bench/lib/client.ts';
import type { RequestRecord } from '../../bench/lib/request-log.ts';
import { createTenant, inParallel, mustPost, setupKeys } from '../../bench/lib/setup.ts';

export const REGIONS = ['eu', 'us', 'ap'] as const;
const NODES_PER_REGION = 2;
/** The planned nodes, eu-1 ... ap-2: a dead one is started again under its name. */
const nodeIdsOf = (region: string): string[] => Array.from({ length: NODES_PER_REGION }, (_, i) => `${region}-${i + 1}`);
const NODE_IDS = REGIONS.flatMap(nodeIdsOf);
const FUNDING_MINOR = 1_000_000_000n;

export interface WorldOptions {
  /** Accounts per region for the load (a hot one in eu comes on top). */
  accountsPerRegion: number;
  /** The spike tenant's write limit per second (fault 14 sends ten times this). */
  spikeLimitPerS: number;
  /** Extra environment for every node (LEASE_TTL_MS, ...); defaults are the nodes' own. */
  env: Record<string, string>;
  /** Where every client attempt is recorded (the checker reads it). */
  record: (r: RequestRecord) => void;
  /** Every node and Redis master in a network namespace of its own (the partition and latency faults need it). */
  netns: boolean;
}

export interface Tenant {
  id: string;
  key: string;
}

export interface World {
  running: RunningCluster;
  nats: NatsServers;
  /** The network of namespaces, when the world runs on one. */
  network: Network | undefined;
  /** Each region's database, for the settle wait, the checker and the faults' aim. */
  pools: Record<string, pg.Pool>;
  tenant: Tenant;
  accounts: Record<string, string[]>;
  /** The eu account every hot transfer credits. */
  hot: string;
  spike: Tenant & { accounts: string[] };
  spikeLimitPerS: number;
  /** The nodes' lease TTL, as configured. */
  leaseTtlMs: number;
  /** A keep-alive client to the node (one per URL, kept: a restarted node has a new URL and gets a new one). */
  client(node: ClusterNode): LoadClient;
  /** Live, unpaused nodes, of one region or all. */
  up(region?: string): ClusterNode[];
  /** The node that owns `accountId`'s shard now (GET /v1/cluster and the accounts row). */
  ownerOf(accountId: string): Promise<{ node: ClusterNode; shard: string }>;
  /** The accounts of the run whose shards `nodeId` owns now. */
  accountsOwnedBy(nodeId: string): Promise<string[]>;
  /** Every planned node running (a dead one started again under its name) and every shard owned. */
  heal(): Promise<void>;
  /** Stops the node gracefully and starts it again under its name with `env` on top (a fault's preparation). */
  restartNode(nodeId: string, env: Record<string, string>): Promise<ClusterNode>;
  shutdown(): Promise<void>;
}

/** The region of one of the run's accounts, read off its id. */
export const regionOf = (accountId: string): string => regionOfAccount(accountId as AccountId);

/** The hosts of a world on a network of namespaces: a node per namespace, a Redis master per namespace, master i "in" region i. */
export const hostOf = (nodeId: string): string => nodeId.replace('-', '');
const MASTER_HOSTS = ['r0', 'r1', 'r2'];
/** Each region's hosts: its nodes and its Redis master (a partition of the region cuts them all off). */
export const regionHosts = (region: string): string[] =>
  [...nodeIdsOf(region).map(hostOf), MASTER_HOSTS[REGIONS.indexOf(region as (typeof REGIONS)[number])]!];

interface Parts { running: RunningCluster; nats: NatsServers; network: Network | undefined }

/** The network of namespaces and where each part runs on it; PostgreSQL and NATS listen on the root namespace's address. */
async function placeOnNetwork(): Promise<{ network: Network; placement: NonNullable<LocalClusterOptions['placement']> }> {
  requireNetns();
  await removeStaleNetworks();
  const network = await createNetwork([...NODE_IDS.map(hostOf), ...MASTER_HOSTS]);
  const host = (name: string): ProcessHost => ({ ip: network.hosts[name]!.ip, wrap: network.execPrefix(name) });
  const subnet = `${network.rootIp.split('.').slice(0, 3).join('.')}.0/24`;
  return {
    network,
    placement: {
      nodes: Object.fromEntries(NODE_IDS.map((id) => [id, host(hostOf(id))])),
      masters: MASTER_HOSTS.map(host),
      postgres: { ip: network.rootIp, network: subnet },
    },
  };
}

async function startParts(env: Record<string, string>, netns: boolean): Promise<Parts> {
  const placed = netns ? await placeOnNetwork() : undefined;
  let nats: NatsServers | undefined;
  try {
    nats = await startNatsServers(1, { namePrefix: 'geopay-chaos', ...(placed ? { host: placed.network.rootIp } : {}) });
    const opts = defaultOptions();
    opts.databaseUrl = '';
    opts.separatePostgres = true;
    opts.regions = Object.fromEntries(REGIONS.map((r) => [r, NODES_PER_REGION]));
    opts.adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
    opts.env = { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', NATS_URLS: nats.urls.join(','), NATS_REPLICAS: '1', ...env };
    if (placed) opts.placement = placed.placement;
    return { running: await startLocalCluster(opts), nats, network: placed?.network };
  } catch (err) {
    await nats?.stopAll();
    await placed?.network.destroy();
    throw err;
  }
}

export async function startWorld(o: WorldOptions): Promise<World> {
  const { running, nats, network } = await startParts(o.env, o.netns);
  const pools = regionPools(running, { connectionTimeoutMillis: 5_000 });
  const clients = new Map<string, LoadClient>();
  const client = (node: ClusterNode): LoadClient => {
    let c = clients.get(node.url);
    if (!c) {
      c = new LoadClient({ url: node.url, connections: 16, timeoutMs: 5_000, retries: 0, log: { write: o.record }, run: 'chaos', engine: 'geopay' });
      clients.set(node.url, c);
    }
    return c;
  };
  const up = (region?: string): ClusterNode[] => running.cluster.live(region).filter((n) => !n.paused);
  const shutdown = async (): Promise<void> => {
    await Promise.all([...clients.values()].map((c) => c.destroy()));
    await Promise.all(Object.values(pools).map((p) => p.end().catch(() => undefined)));
    await running.shutdown();
    await nats.stopAll();
    await network?.destroy();
  };
  try {
    await waitForOwners(running, up, 60_000);
    const made = await populate(running, up, client, o);
    const { track, ...owners } = aim(running, pools, up);
    await track([...Object.values(made.accounts).flat(), made.hot]);
    return {
      running, nats, network, pools, ...made, leaseTtlMs: Number(o.env.LEASE_TTL_MS ?? 10_000), spikeLimitPerS: o.spikeLimitPerS, client, up, ...owners,
      heal: () => healCluster(running, up),
      restartNode: async (nodeId, env) => {
        const old = running.cluster.node(nodeId);
        await old.stop();
        const node = await running.cluster.addNode(old.region, { nodeId, env });
        await waitForOwners(running, up, 90_000);
        return node;
      },
      shutdown,
    };
  } catch (err) {
    // What the nodes said is the first thing to read when a world does not come up.
    const said = running.cluster.nodes.map((n) => `--- ${n.nodeId} (pid ${n.pid}, ${n.alive ? 'alive' : 'exited'}) ---\n${n.output().slice(-1_500)}`).join('\n');
    await shutdown();
    throw new Error(`${(err as Error).message}\n${said}`, { cause: err });
  }
}

/** The map as some live node answers it. */
async function liveMap(running: RunningCluster, up: World['up']): Promise<ClusterMap | undefined> {
  for (const n of up()) {
    const m = await clusterMap(n.url, running.adminKey, 2_000);
    if (m) return m;
  }
  return undefined;
}

/** Until every shard of every region has a live owner. */
async function waitForOwners(running: RunningCluster, up: World['up'], timeoutMs: number): Promise<void> {
  await waitFor('every shard owned by a live node', timeoutMs, async () => {
    const m = await liveMap(running, up);
    const live = new Set(up().map((n) => n.nodeId));
    return m && m.shards.length > 0 && m.shards.every((s) => s.owner !== null && live.has(s.owner)) ? true : undefined;
  }, 250);
}

async function healCluster(running: RunningCluster, up: World['up']): Promise<void> {
  for (const n of running.cluster.nodes.filter((x) => x.paused)) n.sigcont();
  const dead = NODE_IDS.filter((id) => !running.cluster.node(id).alive);
  await Promise.all(dead.map((id) => running.cluster.addNode(id.split('-')[0]!, { nodeId: id })));
  await waitForOwners(running, up, 90_000);
}

/** Faults aim at owners: which shard an account is in (fixed) and who owns that shard (now). */
type Aim = Pick<World, 'ownerOf' | 'accountsOwnedBy'> & { track(ids: string[]): Promise<void> };

function aim(running: RunningCluster, pools: Record<string, pg.Pool>, up: World['up']): Aim {
  const shardOf = new Map<string, string>();
  const shardsOf = async (ids: string[]): Promise<void> => {
    const missing = ids.filter((id) => !shardOf.has(id));
    for (const region of new Set(missing.map(regionOf))) {
      const { rows } = await pools[region]!.query<{ id: string; shard: string }>('SELECT id, shard FROM accounts WHERE id = ANY($1)', [missing.filter((id) => regionOf(id) === region)]);
      for (const r of rows) shardOf.set(r.id, r.shard);
    }
  };
  const owners = async (): Promise<Map<string, string | null>> => {
    const m = await waitFor('GET /v1/cluster', 30_000, () => liveMap(running, up), 200);
    return new Map(m.shards.map((s) => [s.id, s.owner]));
  };
  return {
    track: shardsOf,
    ownerOf: async (accountId) => {
      await shardsOf([accountId]);
      const shard = shardOf.get(accountId)!;
      const owner = (await owners()).get(shard);
      if (!owner) throw new Error(`shard ${shard} has no owner`);
      return { node: running.cluster.node(owner), shard };
    },
    accountsOwnedBy: async (nodeId) => {
      const map = await owners();
      return [...shardOf.keys()].filter((id) => map.get(shardOf.get(id)!) === nodeId);
    },
  };
}

/** The load's tenant (no limits in the way), the spike tenant (a small write limit), their accounts, funded. */
async function populate(running: RunningCluster, up: World['up'], client: World['client'], o: WorldOptions): Promise<Pick<World, 'tenant' | 'accounts' | 'hot' | 'spike'>> {
  const run = `chaos${Date.now().toString(36)}`;
  const key = setupKeys(run);
  const admin = client(up()[0]!);
  const t = await createTenant(admin, { adminKey: running.adminKey, run, liftRateLimits: true }, key);
  const s = await createTenant(admin, { adminKey: running.adminKey, run: `${run}-spike`, liftRateLimits: false }, key);
  const limit = await admin.put(`/v1/tenants/${s.tenantId}/limits`, { readsPerS: 1_000, writesPerS: o.spikeLimitPerS }, running.adminKey);
  if (limit.status !== 200) throw new Error(`PUT limits answered ${limit.status ?? limit.error}`);
  const open = async (tenant: Tenant, region: string, n: number): Promise<string[]> => {
    const nodes = up(region);
    return inParallel(Array.from({ length: n }), 16, async (_, i) => {
      const c = client(nodes[i % nodes.length]!);
      const a = await mustPost(c, { op: 'open', path: '/v1/accounts', body: { currency: 'USD', region }, key: key('open'), bearer: tenant.key, tenant: tenant.id }, [201]);
      const id = String(a.id);
      await mustPost(c, { op: 'deposit', path: '/v1/deposits', body: { accountId: id, amount: FUNDING_MINOR.toString(), currency: 'USD' }, key: key('deposit'), bearer: tenant.key, tenant: tenant.id }, [201, 202]);
      return id;
    });
  };
  const tenant = { id: t.tenantId, key: t.tenantKey };
  const accounts: Record<string, string[]> = {};
  for (const region of REGIONS) accounts[region] = await open(tenant, region, o.accountsPerRegion);
  const [hot] = await open(tenant, 'eu', 1);
  const spikeTenant = { id: s.tenantId, key: s.tenantKey };
  // Two accounts, each opened and funded: 4 writes, under the limit's second.
  const spikeAccounts = await open(spikeTenant, 'us', 2);
  return { tenant, accounts, hot: hot!, spike: { ...spikeTenant, accounts: spikeAccounts } };
}
