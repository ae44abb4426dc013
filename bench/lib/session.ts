// One run against one server: the target (started or already running), the load client on
// it and the request log, released together whatever happens (a failure, a Ctrl-C), and the
// checker on the target's database afterwards (on every region's, for a local cluster).
// loadtest, compare, core and batch run this way.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { check, checkRegions, formatResult, type CheckOptions, type CheckResult } from '../checker.ts';
import { LoadClient, type ClientOptions } from './client.ts';
import { isInterrupted, onInterrupt } from './main.ts';
import type { CheckReport } from './report.ts';
import type { RequestLog } from './request-log.ts';
import { startTarget, type Target } from './target.ts';

export interface Session {
  target: Target;
  client: LoadClient;
  /**
   * The load is over: a server exit from now on is no news, and the client and the log are
   * closed gracefully (the checker reads the log after this).
   */
  endLoad(): Promise<void>;
}

export interface SessionOptions<T> {
  /** Starts the server under test, or names a running one. */
  target: () => Promise<Target>;
  /** The load client's options; the target gives the URL and the engine. */
  client: Omit<ClientOptions, 'url' | 'engine' | 'log'>;
  log?: RequestLog;
  /** The server died while the load ran: `output` is the tail of what it printed. */
  onServerExit(message: string, output: string): void;
  /** What the run amounts to when it failed; `serverOutput` is the started server's tail, if any. */
  onError(err: unknown, serverOutput: string | undefined): T;
}

export async function withSession<T>(o: SessionOptions<T>, body: (s: Session) => Promise<T>): Promise<T> {
  let target: Target | undefined;
  let client: LoadClient | undefined;
  let loadOver = false;
  let offInterrupt: (() => void) | undefined;
  try {
    target = await o.target();
    const running = target;
    offInterrupt = onInterrupt(() => running.stop());
    void running.server?.exited.then((code) => {
      if (loadOver || isInterrupted()) return;
      o.onServerExit(`the server exited during the run (code ${String(code)})`, running.server?.output() ?? '');
    });
    const opened = new LoadClient({ ...o.client, url: target.url, engine: target.engine, log: o.log });
    client = opened;
    const endLoad = async (): Promise<void> => {
      loadOver = true;
      await opened.close();
      await o.log?.close();
    };
    return await body({ target, client: opened, endLoad });
  } catch (err) {
    loadOver = true;
    return o.onError(err, target?.server?.output());
  } finally {
    loadOver = true;
    await client?.destroy();
    await o.log?.close().catch(() => undefined);
    await target?.stop();
    offInterrupt?.();
  }
}

/** withSession for the fixed benches (core, batch): a fresh geopay server on the local PostgreSQL, troubles on stderr. */
export function withFreshServer<T>(client: SessionOptions<T>['client'], body: (s: Session) => Promise<T>, serverEnv: Record<string, string> = {}): Promise<T> {
  return withSession({
    target: () => startTarget({ start: 'postgres', engine: 'geopay', keepDb: false, serverEnv }),
    client,
    // A server that dies mid-run turns every later request into ECONNREFUSED; say why at once.
    onServerExit: (message, output) => console.error(`${message}:\n${output}`),
    onError: (err, output) => {
      if (output !== undefined) console.error(`--- server output tail ---\n${output}`);
      throw err;
    },
  }, body);
}

/** `--start cluster`: the local cluster of `npm run cluster`, whose regions each have a database. */
export interface ClusterTarget extends Target {
  regionDatabases: Record<string, string>;
}

/**
 * The local cluster (3 regions x 2 nodes, 3 Redis masters, a fresh database per region on the
 * local PostgreSQL, dropped at the end): requests go to one node, which forwards to each
 * account's owner. geopay only: the cross-database checker reads geopay's tables.
 */
export async function startClusterTarget(serverEnv: Record<string, string>): Promise<ClusterTarget> {
  const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  // Imported here so a run on one server never loads the cluster helpers.
  const { startLocalCluster, defaultOptions } = await import('../../scripts/cluster.ts');
  const rc = await startLocalCluster({ ...defaultOptions(), databaseUrl: '', adminKey, env: { LOG_LEVEL: 'warn', ...serverEnv, ENGINE: 'geopay' } });
  return {
    url: rc.cluster.live()[0]!.url, adminKey, engine: 'geopay', server: undefined, regionDatabases: rc.regionDatabases,
    describe: `local cluster (${rc.cluster.live().length} nodes, ${rc.redis.urls.length} Redis masters), a database per region, dropped at the end`,
    openDatabase: async () => ({ url: rc.databaseUrl, maxConnections: 4, serverRunning: true, close: async () => undefined }),
    stop: () => rc.shutdown(),
  };
}

// Bounded like everything else: a checker query that runs away must not hang the run.
const checkerPool = (url: string, max: number): pg.Pool => new pg.Pool({ connectionString: url, max, statement_timeout: 300_000 });

const isCluster = (target: Target): target is ClusterTarget => 'regionDatabases' in target;

async function checkOne(url: string, maxConnections: number, opts: CheckOptions): Promise<CheckResult> {
  const pool = checkerPool(url, maxConnections);
  try {
    return await check(pool, opts);
  } finally {
    await pool.end();
  }
}

/** The cross-database checker over every region's database. */
async function checkCluster(regionDatabases: Record<string, string>, opts: CheckOptions): Promise<CheckResult> {
  const pools = Object.fromEntries(Object.entries(regionDatabases).map(([region, url]) => [region, checkerPool(url, 2)]));
  try {
    return await checkRegions(pools, opts);
  } finally {
    await Promise.all(Object.values(pools).map((p) => p.end()));
  }
}

/** Runs the checker on the target's database (every region's, for a cluster); undefined when there is none to read. */
export async function checkTarget(target: Target, requests: string | undefined, settleMs: number): Promise<CheckReport | undefined> {
  const handle = await target.openDatabase();
  if (!handle) return undefined;
  try {
    // A stopped server settles nothing: waiting for its transfers in flight would be in vain.
    const settleTimeoutMs = handle.serverRunning ? settleMs : 0;
    const opts: CheckOptions = { ...(requests ? { requests } : {}), settleTimeoutMs, engine: target.engine === 'baseline' ? 'baseline' : 'auto' };
    const r = isCluster(target) ? await checkCluster(target.regionDatabases, opts) : await checkOne(handle.url, handle.maxConnections, opts);
    process.stdout.write(`${formatResult(r)}\n`);
    return { engine: target.engine, ok: r.ok, failures: r.failures, notes: r.notes, stats: r.stats };
  } finally {
    await handle.close();
  }
}
