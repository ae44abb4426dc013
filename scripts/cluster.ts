// `npm run cluster`: a local geopay cluster to try by hand — 3 Redis masters on free ports,
// 3 regions x 2 nodes, a database per region: fresh ones on the local PostgreSQL, or with
// --separate-postgres a PostgreSQL server of its own per region (an outage is a real server
// going away). DATABASE_URL instead puts every region on that one database, kept. Ctrl-C
// (SIGINT) or SIGTERM stops exactly what it started: the nodes (drained), the Redis masters,
// the databases it made. bench/cluster.ts starts the same cluster from here.
// With --prometheus, a Prometheus scrapes every node with the alert rules loaded (docs/monitoring.md).
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { parseArgs } from 'node:util';
import { isMain } from '../bench/lib/main.ts';
import { formatTable } from '../bench/lib/table.ts';
import { createTestDatabase } from '../test/helpers/db.ts';
import { startCluster, startRedisMasters, type LocalCluster, type ProcessHost, type RedisMasters } from '../test/helpers/cluster.ts';
import { startPostgresInstances, type PgInstance } from '../test/helpers/postgres-instances.ts';
import { alertRulesPath, startPrometheus, type RunningPrometheus } from './prometheus.ts';

export interface LocalClusterOptions {
  /** Nodes per region. */
  regions: Record<string, number>;
  masters: number;
  /** One existing database for every region (kept); empty: a database per region, made here. */
  databaseUrl: string;
  /** With no databaseUrl: each region's database is a PostgreSQL server of its own, not one on the local PostgreSQL. */
  separatePostgres?: boolean;
  adminKey: string;
  /** Environment for every node (LEASE_TTL_MS, LOG_LEVEL, ...). */
  env: Record<string, string>;
  /**
   * Where things run on a network of namespaces (test/helpers/netns.ts): each node by its id,
   * each Redis master, and the address and network the PostgreSQL servers listen on besides
   * loopback (separatePostgres only). Without it, everything is on loopback.
   */
  placement?: { nodes: Record<string, ProcessHost>; masters: ProcessHost[]; postgres: { ip: string; network: string } };
}

/** Where the regions' data lives: `given` (databaseUrl, shared, kept), `created` (local PostgreSQL, dropped), `separate` (a server per region, stopped). */
export type DatabaseSource = 'given' | 'created' | 'separate';

export interface RunningCluster {
  cluster: LocalCluster;
  redis: RedisMasters;
  /** Each region's database; the same URL for every region when it is `given`. */
  regionDatabases: Record<string, string>;
  /** The control database (tenants, keys): the first region's. */
  databaseUrl: string;
  databases: DatabaseSource;
  /** `separate` only: each region's PostgreSQL server, to stop and start it (a region's database outage). */
  pgInstances?: Record<string, PgInstance>;
  adminKey: string;
  /** Nodes first (graceful, they release their leases while Redis is still up), then Redis, then the databases. */
  shutdown(): Promise<void>;
}

export const defaultOptions = (): LocalClusterOptions => ({
  regions: { eu: 2, us: 2, ap: 2 },
  masters: 3,
  databaseUrl: process.env.DATABASE_URL ?? '',
  adminKey: process.env.ADMIN_API_KEY || `gp_admin_${randomBytes(16).toString('hex')}`,
  env: {},
});

interface RegionDatabases {
  urls: Record<string, string>;
  source: DatabaseSource;
  instances?: Record<string, PgInstance>;
  /** Drops or stops what was made here; a given database stays. */
  remove(): Promise<void>;
}

const byRegion = <T>(regions: string[], values: T[]): Record<string, T> => Object.fromEntries(regions.map((r, i) => [r, values[i]!]));

async function provideDatabases(regions: string[], opts: LocalClusterOptions): Promise<RegionDatabases> {
  if (opts.databaseUrl) {
    if (opts.separatePostgres) throw new Error('separatePostgres starts databases of its own: it excludes databaseUrl (DATABASE_URL)');
    return { urls: byRegion(regions, regions.map(() => opts.databaseUrl)), source: 'given', remove: async () => undefined };
  }
  if (opts.separatePostgres) {
    // Each server's own `postgres` database: the server exists for this cluster alone.
    const listen = opts.placement ? { listen: opts.placement.postgres } : {};
    const servers = await startPostgresInstances(regions.length, { namePrefix: 'geopay-cluster', ...listen });
    const instances = byRegion(regions, servers.instances);
    return { urls: byRegion(regions, servers.instances.map((i) => i.url)), source: 'separate', instances, remove: () => servers.stopAll() };
  }
  // Settled, not all: on a failure every database that was created is dropped again.
  const settled = await Promise.allSettled(regions.map((r) => createTestDatabase(`cluster_${r}`)));
  const made = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const remove = async (): Promise<void> => {
    await Promise.all(made.map((d) => d.drop()));
  };
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) {
    await remove();
    throw failed.reason;
  }
  return { urls: byRegion(regions, made.map((d) => d.url)), source: 'created', remove };
}

export async function startLocalCluster(opts: LocalClusterOptions): Promise<RunningCluster> {
  const regions = Object.keys(opts.regions);
  const dbs = await provideDatabases(regions, opts);
  const controlUrl = dbs.urls[regions[0]!]!;
  let redis: RedisMasters | undefined;
  let cluster: LocalCluster | undefined;
  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      await cluster?.stopAll();
      await redis?.stopAll();
      await dbs.remove();
    })();
    return stopping;
  };
  try {
    redis = await startRedisMasters(opts.masters, opts.placement?.masters);
    // A given database is every region's, as one shared database (no REGION_DATABASE_URLS).
    const databases = dbs.source === 'given' ? {} : { regionDatabases: dbs.urls };
    const hosts = opts.placement ? { hosts: opts.placement.nodes } : {};
    cluster = await startCluster({ databaseUrl: controlUrl, ...databases, ...hosts, adminKey: opts.adminKey, regions: opts.regions, redisUrls: redis.urls, env: opts.env });
  } catch (err) {
    await shutdown();
    throw err;
  }
  return {
    cluster, redis, regionDatabases: dbs.urls, databaseUrl: controlUrl, databases: dbs.source,
    ...(dbs.instances ? { pgInstances: dbs.instances } : {}), adminKey: opts.adminKey, shutdown,
  };
}

/**
 * A small pool on every region's database of a running cluster (the benches' and the chaos
 * run's settle waits and checkers). A restarted server ends the idle connections: their
 * 'error' is swallowed, or it would end the program.
 */
export function regionPools(r: RunningCluster, opts: { connectionTimeoutMillis?: number } = {}): Record<string, pg.Pool> {
  return Object.fromEntries(Object.entries(r.regionDatabases).map(([region, url]) => {
    const pool = new pg.Pool({ connectionString: url, max: 2, statement_timeout: 300_000, ...opts });
    pool.on('error', () => undefined);
    return [region, pool];
  }));
}

/** A cluster that may have a Prometheus scraping it (--prometheus). */
type MonitoredCluster = RunningCluster & { prometheus?: RunningPrometheus };

/**
 * Starts Prometheus on every node of `r`, with the alert rules. Its shutdown stops Prometheus
 * first (it would only record the nodes going down), then the cluster; a failed start stops the cluster.
 */
async function withPrometheus(r: RunningCluster): Promise<MonitoredCluster> {
  let prometheus: RunningPrometheus;
  try {
    prometheus = await startPrometheus({ targets: r.cluster.nodes.map((n) => n.url), rulesFile: alertRulesPath });
  } catch (err) {
    await r.shutdown();
    throw err;
  }
  const shutdown = async (): Promise<void> => {
    await prometheus.stop();
    await r.shutdown();
  };
  return { ...r, prometheus, shutdown };
}

/** "eu=2,us=2,ap=2" -> { eu: 2, us: 2, ap: 2 } */
function parseRegions(raw: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of raw.split(',')) {
    const m = /^([a-z][a-z0-9-]{0,15})=([1-9][0-9]?)$/.exec(part.trim());
    if (!m) throw new Error(`--regions: expected region=count[,region=count...], got "${part}"`);
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

const usage = `npm run cluster -- [--regions eu=2,us=2,ap=2] [--masters 3] [--lease-ttl-ms N] [--separate-postgres] [--prometheus]
A database per region: by default each a fresh one on the local PostgreSQL (dropped at exit);
--separate-postgres starts a PostgreSQL server per region instead (initdb in a temp folder; stopped and removed at exit).
DATABASE_URL, if set (and no --separate-postgres), is every region's one database instead (kept).
--prometheus also starts Prometheus (/usr/bin/prometheus) scraping every node, with ops/prometheus/alerts.yml loaded.
ADMIN_API_KEY, if set, is installed as the admin key; other variables (LOG_LEVEL, ...) reach the nodes.`;

export function describeDatabases(r: RunningCluster): string {
  switch (r.databases) {
    case 'given':
      return 'DATABASE_URL for every region (kept)';
    case 'created':
      return 'one per region on the local PostgreSQL (dropped at exit)';
    case 'separate': {
      const pids = Object.entries(r.pgInstances ?? {}).map(([region, i]) => `${region} ${i.pid}`);
      return `a PostgreSQL server per region (pids ${pids.join(', ')}; stopped and removed at exit)`;
    }
  }
}

/** What was started, and how to reach it. */
function printCluster(r: MonitoredCluster): void {
  console.log(`geopay cluster: ${r.cluster.nodes.length} nodes in ${r.cluster.regions.length} regions, ${r.redis.urls.length} Redis masters`);
  console.log('');
  const order = (n: { region: string; nodeId: string }): string => `${r.cluster.regions.indexOf(n.region)}/${n.nodeId}`;
  const rows = [...r.cluster.nodes]
    .sort((a, b) => order(a).localeCompare(order(b)))
    .map((n) => [n.nodeId, n.region, n.url, r.regionDatabases[n.region]!, String(n.pid)]);
  console.log(formatTable(['node', 'region', 'url', 'database', 'pid'], rows, { labelColumns: 4 }));
  console.log('');
  console.log(`redis:     ${r.redis.urls.join(',')} (pids ${r.redis.urls.map((_, i) => r.redis.pid(i)).join(', ')})`);
  console.log(`databases: ${describeDatabases(r)}; control database ${r.databaseUrl}`);
  console.log(`admin key: ${r.adminKey}`);
  if (r.prometheus) console.log(`prometheus: ${r.prometheus.url} (pid ${r.prometheus.pid}; config ${r.prometheus.configPath}; rules ${alertRulesPath})`);
  console.log('');
  console.log(`try:       curl -s -H "authorization: Bearer ${r.adminKey}" ${r.cluster.nodes[0]!.url}/v1/cluster`);
  console.log('Ctrl-C stops everything.');
}

/** The command line as options; 'help' for --help. */
function readOptions(): { opts: LocalClusterOptions; monitor: boolean } | 'help' {
  const { values } = parseArgs({
    options: {
      regions: { type: 'string' },
      masters: { type: 'string' },
      'lease-ttl-ms': { type: 'string' },
      prometheus: { type: 'boolean' },
      'separate-postgres': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const opts = defaultOptions();
  if (values.regions) opts.regions = parseRegions(values.regions);
  if (values.masters) {
    opts.masters = Number(values.masters);
    if (!Number.isInteger(opts.masters) || opts.masters < 1 || opts.masters > 9) throw new Error('--masters: 1 to 9');
  }
  if (values['lease-ttl-ms']) opts.env.LEASE_TTL_MS = values['lease-ttl-ms'];
  if (values['separate-postgres']) {
    if (opts.databaseUrl) throw new Error('--separate-postgres starts databases of its own: unset DATABASE_URL');
    opts.separatePostgres = true;
  }
  opts.env.LOG_LEVEL = process.env.LOG_LEVEL ?? 'warn';
  return { opts, monitor: values.prometheus === true };
}

async function main(): Promise<number> {
  const read = readOptions();
  if (read === 'help') {
    console.log(usage);
    return 0;
  }
  const { opts, monitor } = read;

  // Signals from the first moment: a Ctrl-C during start waits for it, then stops everything.
  let running: Promise<MonitoredCluster> | undefined;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      // A second Ctrl-C: no more waiting. The exit hooks SIGKILL every child (PostgreSQL servers
      // of --separate-postgres included); databases created on the local PostgreSQL stay.
      console.error(`\n${signal} again: killing everything now`);
      process.exit(130);
    }
    const databases = opts.databaseUrl ? '' : opts.separatePostgres ? ', then the PostgreSQL servers' : ', then dropping the databases';
    console.log(`\n${signal}: stopping ${monitor ? 'Prometheus, then ' : ''}the nodes, then Redis${databases}...`);
    void (running ?? Promise.reject(new Error('not started')))
      .then((r) => r.shutdown())
      .then(
        () => {
          console.log('stopped');
          process.exit(0);
        },
        (err: unknown) => {
          console.error('shutdown failed:', err);
          process.exit(1);
        },
      );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  running = startLocalCluster(opts).then((r) => (monitor ? withPrometheus(r) : r));
  const r = await running;
  if (signals > 0) return 0;
  printCluster(r);
  for (const n of r.cluster.nodes) {
    void n.exited.then((code) => {
      if (signals === 0) console.error(`node ${n.nodeId} (pid ${n.pid}) exited with ${String(code)}:\n${n.output()}`);
    });
  }
  const prometheus = r.prometheus;
  void prometheus?.exited.then((code) => {
    if (signals === 0) console.error(`prometheus (pid ${prometheus.pid}) exited with ${String(code)}:\n${prometheus.output()}`);
  });
  // The children and the signal handlers keep the process alive until a signal comes.
  return new Promise<number>(() => undefined);
}

if (isMain(import.meta.url)) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exitCode = 1;
    },
  );
}
