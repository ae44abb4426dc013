// A local geopay cluster as child processes: independent Redis masters for the Redlock leases
// and geopay nodes in several regions on one shared PostgreSQL database. Tests, the bench and
// `npm run cluster` use it to kill, pause and restart real processes. Only the pids started
// here are ever signalled, and a process 'exit' hook SIGKILLs whatever is still running.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { request as undiciRequest } from 'undici';
import { requireRedisServerBinary } from './prereq.ts';
import { startServer, type ServerProcess } from './server-process.ts';

/** redis-server starts in milliseconds; ten seconds means it will not. */
const redisStartTimeoutMs = 10_000;
/** A port released a moment ago can still be held by a dying process; retry binding it this long. */
const redisRestartRetryMs = 5_000;
const tailChars = 4_000;

const redisChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of redisChildren) child.kill('SIGKILL');
});

/** A free TCP port on the loopback: bind port 0, read it, close. Another process may race for it; callers retry. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

interface RedisProcess {
  child: ChildProcess;
  exited: Promise<void>;
}

/** Where a process runs: an address to listen on, and an argv its command is appended to (a network namespace). */
export interface ProcessHost {
  ip: string;
  wrap: string[];
}

const LOOPBACK: ProcessHost = { ip: '127.0.0.1', wrap: [] };

/** Starts one redis-server on `port` and resolves once it accepts connections; rejects when it exits first. */
function spawnRedis(port: number, host: ProcessHost = LOOPBACK): Promise<RedisProcess> {
  // Off the loopback only on a network of the run's own namespaces, where protected mode would refuse the nodes.
  const open = host.ip === LOOPBACK.ip ? [] : ['--protected-mode', 'no'];
  const command = [...host.wrap, 'redis-server', '--port', String(port), '--save', '', '--appendonly', 'no', '--bind', host.ip, ...open, '--dir', tmpdir()];
  const child = spawn(
    command[0]!,
    command.slice(1),
    // Own process group: a Ctrl-C at the terminal of `npm run cluster` must not take Redis down
    // before the nodes have released their leases; the owner of this object stops it.
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  redisChildren.add(child);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      redisChildren.delete(child);
      resolve();
    });
  });
  let tail = '';
  return new Promise((resolve, reject) => {
    let done = false;
    const fail = (why: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`redis-server on port ${port} did not start: ${why}\n${tail}`));
    };
    const timer = setTimeout(() => fail(`not ready within ${redisStartTimeoutMs} ms`), redisStartTimeoutMs);
    child.once('error', (err) => fail(`spawn failed: ${err.message}`));
    void exited.then(() => fail('exited early'));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (c: string) => {
      tail = (tail + c).slice(-tailChars);
    });
    // Keep draining stdout for the life of the process: a full pipe would block Redis.
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (c: string) => {
      tail = (tail + c).slice(-tailChars);
      if (!done && /Ready to accept connections/.test(tail)) {
        done = true;
        clearTimeout(timer);
        resolve({ child, exited });
      }
    });
  });
}

export interface RedisMasters {
  /** redis://127.0.0.1:P, one per master, in start order (REDIS_URLS joins them with commas). */
  readonly urls: string[];
  readonly ports: number[];
  /** The pid of master i, or undefined while it is down. */
  pid(i: number): number | undefined;
  /** Kills master i (SIGKILL by default: a crash) and waits for it to exit. Its data is gone. */
  kill(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** Starts master i again on the same port, empty (no persistence). */
  restart(i: number): Promise<void>;
  stopAll(): Promise<void>;
}

/** Starts `n` independent Redis masters on free ports, without persistence: on loopback, or master i on `hosts[i]`. */
export async function startRedisMasters(n: number, hosts?: ProcessHost[]): Promise<RedisMasters> {
  const hostOf = (i: number): ProcessHost => hosts?.[i] ?? LOOPBACK;
  requireRedisServerBinary();
  const ports: number[] = [];
  const procs: (RedisProcess | undefined)[] = [];
  const stopOne = async (i: number, signal: NodeJS.Signals): Promise<void> => {
    const p = procs[i];
    if (!p) return;
    procs[i] = undefined;
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
    await p.exited;
  };
  try {
    for (let i = 0; i < n; i++) {
      // Another process can take the port between freePort() and the bind: try a few.
      for (let attempt = 0; ; attempt++) {
        const port = await freePort();
        try {
          procs.push(await spawnRedis(port, hostOf(i)));
          ports.push(port);
          break;
        } catch (err) {
          if (attempt >= 4) throw err;
        }
      }
    }
  } catch (err) {
    await Promise.all(procs.map((_, i) => stopOne(i, 'SIGKILL')));
    throw err;
  }
  return {
    urls: ports.map((p, i) => `redis://${hostOf(i).ip}:${p}`),
    ports,
    pid: (i) => procs[i]?.child.pid,
    kill: (i, signal = 'SIGKILL') => stopOne(i, signal),
    async restart(i) {
      if (procs[i]) throw new Error(`redis master ${i} is still running`);
      const deadline = Date.now() + redisRestartRetryMs;
      for (;;) {
        try {
          procs[i] = await spawnRedis(ports[i]!, hostOf(i));
          return;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await sleep(100);
        }
      }
    },
    async stopAll() {
      // SIGTERM: Redis shuts down at once (nothing to save).
      await Promise.all(procs.map((_, i) => stopOne(i, 'SIGTERM')));
    },
  };
}

export interface ClusterNode {
  readonly nodeId: string;
  readonly region: string;
  readonly url: string;
  readonly pid: number;
  /** False once the process has exited. */
  readonly alive: boolean;
  /** Whether it is stopped by sigstop() right now. */
  readonly paused: boolean;
  readonly exited: Promise<number | null>;
  output(): string;
  /** The node's latest stdout lines, when the cluster keeps them (StartClusterOptions.keepLogLines). */
  logLines(): string[];
  /** Sends the signal (default SIGKILL: a crash) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Graceful: SIGTERM (after SIGCONT if paused), waits for the drain and exit. */
  stop(): Promise<void>;
  /** Freezes the process (a GC pause, a VM stall): it keeps its sockets and wakes up on sigcont(). */
  sigstop(): void;
  sigcont(): void;
}

export interface StartClusterOptions {
  /** The database of every region, unless `regionDatabases` names one per region. */
  databaseUrl: string;
  /**
   * A database per region (REGION_DATABASE_URLS): each node's DATABASE_URL is its region's,
   * and the control database is `controlDatabaseUrl`, else the first region's.
   */
  regionDatabases?: Record<string, string>;
  controlDatabaseUrl?: string;
  adminKey: string;
  /** Nodes per region, e.g. { eu: 2, us: 2, ap: 2 }; every region listed is in REGIONS. */
  regions: Record<string, number>;
  redisUrls: string[];
  /** Extra environment for every node (LEASE_TTL_MS, REGION_FAILOVER, LOG_LEVEL, ...). */
  env?: Record<string, string>;
  /** Shared by the nodes to authenticate forwarded requests; a random one by default. */
  clusterSecret?: string;
  /** Lines of stdout each node keeps for logLines() (tests that read the logs); none by default. */
  keepLogLines?: number;
  /** Where each node runs, by node id (a network namespace of its own); loopback for the others. */
  hosts?: Record<string, ProcessHost>;
}

export interface AddNodeOptions {
  /** Reuse a name to restart a node that died (a supervisor would); default `<region>-<k>`. */
  nodeId?: string;
  env?: Record<string, string>;
}

export interface LocalCluster {
  /** Every node started, in start order; dead ones stay listed (see `alive`). */
  readonly nodes: ClusterNode[];
  readonly regions: string[];
  readonly adminKey: string;
  readonly databaseUrl: string;
  live(region?: string): ClusterNode[];
  /** The newest live node with this id, else the newest with it. */
  node(nodeId: string): ClusterNode;
  addNode(region: string, opts?: AddNodeOptions): Promise<ClusterNode>;
  /** SIGTERM to every live node (SIGKILL after the escalation in startServer). */
  stopAll(): Promise<void>;
}

/**
 * Starts the nodes of every region (a cold cluster: one, then all others at once). Each prints
 * its URL; with PORT=0 and no ADVERTISED_URL it advertises that URL to its peers.
 */
export async function startCluster(opts: StartClusterOptions): Promise<LocalCluster> {
  const regions = Object.keys(opts.regions);
  const secret = opts.clusterSecret ?? `gp_cluster_${randomBytes(16).toString('hex')}`;
  const perRegion = opts.regionDatabases;
  if (perRegion) for (const r of regions) if (!perRegion[r]) throw new Error(`no database for region ${r}`);
  const controlUrl = opts.controlDatabaseUrl ?? (perRegion ? perRegion[regions[0]!]! : opts.databaseUrl);
  const nodes: ClusterNode[] = [];
  const counters = new Map<string, number>();

  const launch = async (region: string, nodeId: string, env: Record<string, string> = {}): Promise<ClusterNode> => {
    const host = opts.hosts?.[nodeId];
    const proc: ServerProcess = await startServer({
      databaseUrl: perRegion?.[region] ?? opts.databaseUrl,
      adminKey: opts.adminKey,
      ...(host ? { wrap: host.wrap } : {}),
      ...(opts.keepLogLines === undefined ? {} : { keepLogLines: opts.keepLogLines }),
      env: {
        // Every node holds a pool; max_connections (100 here) is shared by the whole cluster.
        PG_POOL_MAX: '8',
        FORWARD_TIMEOUT_MS: '3000',
        ...(perRegion ? { REGION_DATABASE_URLS: Object.entries(perRegion).map(([r, u]) => `${r}=${u}`).join(','), CONTROL_DATABASE_URL: controlUrl } : {}),
        ...opts.env,
        ...env,
        ...(host ? { HOST: host.ip, INTERNAL_HOST: host.ip } : {}),
        NODE_ID: nodeId,
        REGION: region,
        REGIONS: regions.join(','),
        REDIS_URLS: opts.redisUrls.join(','),
        CLUSTER_SECRET: secret,
        ADVERTISED_URL: '',
      },
    });
    let alive = true;
    let paused = false;
    void proc.exited.then(() => {
      alive = false;
    });
    const signal = (s: NodeJS.Signals): void => {
      // Only our own child, and only while it runs: a pid is reused once the process is reaped.
      if (alive) process.kill(proc.pid, s);
    };
    const node: ClusterNode = {
      nodeId,
      region,
      url: proc.url,
      pid: proc.pid,
      get alive() {
        return alive;
      },
      get paused() {
        return paused && alive;
      },
      exited: proc.exited,
      output: proc.output,
      logLines: proc.logLines,
      kill: async (s: NodeJS.Signals = 'SIGKILL') => {
        if (paused && s !== 'SIGKILL') node.sigcont();
        await proc.kill(s);
      },
      stop: async () => {
        if (paused) node.sigcont();
        await proc.kill('SIGTERM');
      },
      sigstop: () => {
        signal('SIGSTOP');
        paused = true;
      },
      sigcont: () => {
        signal('SIGCONT');
        paused = false;
      },
    };
    nodes.push(node);
    return node;
  };

  const nextId = (region: string): string => {
    const k = (counters.get(region) ?? 0) + 1;
    counters.set(region, k);
    return `${region}-${k}`;
  };

  const cluster: LocalCluster = {
    nodes,
    regions,
    adminKey: opts.adminKey,
    databaseUrl: opts.databaseUrl,
    live: (region) => nodes.filter((n) => n.alive && (region === undefined || n.region === region)),
    node(nodeId) {
      const all = nodes.filter((n) => n.nodeId === nodeId);
      const found = all.filter((n) => n.alive).pop() ?? all.pop();
      if (!found) throw new Error(`no node ${nodeId}`);
      return found;
    },
    addNode(region, o = {}) {
      if (!regions.includes(region)) throw new Error(`region ${region} is not one of ${regions.join(',')}`);
      let nodeId = o.nodeId;
      if (nodeId === undefined) {
        do nodeId = nextId(region);
        while (nodes.some((n) => n.nodeId === nodeId));
      }
      return launch(region, nodeId, o.env);
    },
    async stopAll() {
      await Promise.all(nodes.filter((n) => n.alive).map((n) => n.stop()));
    },
  };

  try {
    const planned = regions.flatMap((region) => Array.from({ length: opts.regions[region]! }, () => [region, nextId(region)] as const));
    // The first node alone, then the rest together: on a fresh database, nodes migrating at the
    // same moment race on `CREATE TABLE IF NOT EXISTS schema_migrations` (taken before the
    // migration lock) and one of them fails to start with a duplicate pg_type key.
    // With a database per region, the first node of each region migrates its own, one at a time.
    const firsts = perRegion ? planned.filter(([r], i) => planned.findIndex(([q]) => q === r) === i) : planned.slice(0, 1);
    const rest = planned.filter((p) => !firsts.includes(p));
    for (const [region, nodeId] of firsts) await launch(region, nodeId);
    // Settled, not all: on a failure every node that did start is killed below, none left starting.
    const started = await Promise.allSettled(rest.map(([region, nodeId]) => launch(region, nodeId)));
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    await Promise.all(nodes.map((n) => n.kill('SIGKILL')));
    throw err;
  }
  return cluster;
}

// --- The cluster map (GET /v1/cluster, admin) ---

export interface ClusterMapNode {
  nodeId: string;
  region: string;
  url: string;
  heartbeatAgeMs: number;
  /** A count or the ids, whichever the server reports. */
  shards: number | string[];
}
export interface ClusterMapShard {
  id: string;
  region: string;
  owner: string | null;
  epoch: string | number;
}
export interface ClusterMap {
  nodes: ClusterMapNode[];
  shards: ClusterMapShard[];
}

/** GET /v1/cluster on one node; undefined when it does not answer 200 within `timeoutMs`. */
export async function clusterMap(url: string, adminKey: string, timeoutMs = 2_000): Promise<ClusterMap | undefined> {
  try {
    const res = await undiciRequest(`${url}/v1/cluster`, {
      headers: { authorization: `Bearer ${adminKey}` },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) return undefined;
    return JSON.parse(text) as ClusterMap;
  } catch {
    return undefined;
  }
}

/** Shards per owner in a cluster map (unowned shards under ''). */
export function shardsByOwner(map: ClusterMap): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const s of map.shards) {
    const k = s.owner ?? '';
    out.set(k, [...(out.get(k) ?? []), s.id]);
  }
  return out;
}

/** Polls `probe` until it returns a value other than undefined; throws naming `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
