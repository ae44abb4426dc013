// `npm run cluster`: a local geopay cluster to try by hand — 3 Redis masters on free ports,
// 3 regions x 2 nodes on one PostgreSQL database (DATABASE_URL, or a fresh one it creates and
// drops). Ctrl-C (SIGINT) or SIGTERM stops exactly what it started: the nodes (drained), the
// Redis masters, the database it created. bench/cluster.ts starts the same cluster from here.
// With --prometheus, a Prometheus scrapes every node with the alert rules loaded (docs/monitoring.md).
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { isMain } from '../bench/lib/main.ts';
import { formatTable } from '../bench/lib/table.ts';
import { createTestDatabase } from '../test/helpers/db.ts';
import { startCluster, startRedisMasters, type LocalCluster, type RedisMasters } from '../test/helpers/cluster.ts';
import { alertRulesPath, startPrometheus, type RunningPrometheus } from './prometheus.ts';

export interface LocalClusterOptions {
  /** Nodes per region. */
  regions: Record<string, number>;
  masters: number;
  /** An existing database to use (not dropped); empty: a fresh one on the local PostgreSQL. */
  databaseUrl: string;
  adminKey: string;
  /** Environment for every node (LEASE_TTL_MS, LOG_LEVEL, ...). */
  env: Record<string, string>;
}

export interface RunningCluster {
  cluster: LocalCluster;
  redis: RedisMasters;
  databaseUrl: string;
  /** Whether the database was created here (and is dropped by shutdown). */
  createdDatabase: boolean;
  adminKey: string;
  /** Nodes first (graceful, they release their leases while Redis is still up), then Redis, then the database. */
  shutdown(): Promise<void>;
}

export const defaultOptions = (): LocalClusterOptions => ({
  regions: { eu: 2, us: 2, ap: 2 },
  masters: 3,
  databaseUrl: process.env.DATABASE_URL ?? '',
  adminKey: process.env.ADMIN_API_KEY || `gp_admin_${randomBytes(16).toString('hex')}`,
  env: {},
});

export async function startLocalCluster(opts: LocalClusterOptions): Promise<RunningCluster> {
  const created = opts.databaseUrl ? undefined : await createTestDatabase('cluster');
  const databaseUrl = opts.databaseUrl || created!.url;
  let redis: RedisMasters | undefined;
  let cluster: LocalCluster | undefined;
  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      await cluster?.stopAll();
      await redis?.stopAll();
      await created?.drop();
    })();
    return stopping;
  };
  try {
    redis = await startRedisMasters(opts.masters);
    cluster = await startCluster({ databaseUrl, adminKey: opts.adminKey, regions: opts.regions, redisUrls: redis.urls, env: opts.env });
  } catch (err) {
    await shutdown();
    throw err;
  }
  return { cluster, redis, databaseUrl, createdDatabase: created !== undefined, adminKey: opts.adminKey, shutdown };
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

const usage = `npm run cluster -- [--regions eu=2,us=2,ap=2] [--masters 3] [--lease-ttl-ms N] [--prometheus]
--prometheus also starts Prometheus (/usr/bin/prometheus) scraping every node, with ops/prometheus/alerts.yml loaded.
Uses DATABASE_URL if set (kept), else creates a database on the local PostgreSQL (dropped at exit).
ADMIN_API_KEY, if set, is installed as the admin key; other variables (LOG_LEVEL, ...) reach the nodes.`;

/** What was started, and how to reach it. */
function printCluster(r: MonitoredCluster): void {
  console.log(`geopay cluster: ${r.cluster.nodes.length} nodes in ${r.cluster.regions.length} regions, ${r.redis.urls.length} Redis masters`);
  console.log('');
  const order = (n: { region: string; nodeId: string }): string => `${r.cluster.regions.indexOf(n.region)}/${n.nodeId}`;
  const rows = [...r.cluster.nodes].sort((a, b) => order(a).localeCompare(order(b))).map((n) => [n.nodeId, n.region, n.url, String(n.pid)]);
  console.log(formatTable(['node', 'region', 'url', 'pid'], rows, { labelColumns: 3 }));
  console.log('');
  console.log(`redis:     ${r.redis.urls.join(',')} (pids ${r.redis.urls.map((_, i) => r.redis.pid(i)).join(', ')})`);
  console.log(`database:  ${r.databaseUrl}${r.createdDatabase ? ' (created; dropped at exit)' : ' (DATABASE_URL; kept)'}`);
  console.log(`admin key: ${r.adminKey}`);
  if (r.prometheus) console.log(`prometheus: ${r.prometheus.url} (pid ${r.prometheus.pid}; config ${r.prometheus.configPath}; rules ${alertRulesPath})`);
  console.log('');
  console.log(`try:       curl -s -H "authorization: Bearer ${r.adminKey}" ${r.cluster.nodes[0]!.url}/v1/cluster`);
  console.log('Ctrl-C stops everything.');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      regions: { type: 'string' },
      masters: { type: 'string' },
      'lease-ttl-ms': { type: 'string' },
      prometheus: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const opts = defaultOptions();
  if (values.regions) opts.regions = parseRegions(values.regions);
  if (values.masters) {
    opts.masters = Number(values.masters);
    if (!Number.isInteger(opts.masters) || opts.masters < 1 || opts.masters > 9) throw new Error('--masters: 1 to 9');
  }
  if (values['lease-ttl-ms']) opts.env.LEASE_TTL_MS = values['lease-ttl-ms'];
  opts.env.LOG_LEVEL = process.env.LOG_LEVEL ?? 'warn';

  // Signals from the first moment: a Ctrl-C during start waits for it, then stops everything.
  let running: Promise<MonitoredCluster> | undefined;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      // A second Ctrl-C: no more waiting. The exit hooks SIGKILL every child; the database stays.
      console.error(`\n${signal} again: killing everything now`);
      process.exit(130);
    }
    console.log(`\n${signal}: stopping ${values.prometheus ? 'Prometheus, then ' : ''}the nodes, then Redis${opts.databaseUrl ? '' : ', then dropping the database'}...`);
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

  running = startLocalCluster(opts).then((r) => (values.prometheus ? withPrometheus(r) : r));
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
