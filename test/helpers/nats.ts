// nats-server processes of a test's own: one server, or a JetStream cluster of several, each with
// its own store folder and free loopback ports, started, stopped, crashed (SIGKILL) and
// restarted on the same ports and store by pid. Only the pids started here are ever signalled;
// a process 'exit' hook SIGKILLs what still runs and removes the folders.
import type { ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './cluster.ts';
import { requireBinary } from './prereq.ts';
import { PortTaken, spawnServer, startOncePortFree } from './spawn-server.ts';

export const installNatsServerCommand = 'apt-get install -y nats-server';

/**
 * A server is up in well under a second; one recovering its store, or a cluster electing its
 * meta leader, in a few. 20 s means it will not.
 */
const startTimeoutMs = 20_000;
/** A server that has not exited this long after SIGTERM is stuck: SIGKILL, so stop() always resolves. */
const stopTimeoutMs = 10_000;
/** A port released a moment ago can still be held by a dying process; restart() retries binding it this long. */
const restartRetryMs = 5_000;
/** Whole fresh sets of ports tried when another process takes one between freePort() and the bind. */
const portAttempts = 4;
const probeTimeoutMs = 1_000;
const tailChars = 4_000;

const live = new Map<ChildProcess, string>();
process.once('exit', () => {
  for (const [child, root] of live) {
    child.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true, maxRetries: 2 });
  }
});

export interface NatsServers {
  /** nats://127.0.0.1:<port> of each server, in start order (NATS_URLS joins them with commas). */
  readonly urls: string[];
  readonly ports: number[];
  /** Each server's name (-n), as JetStream reports a stream's leader and replicas. */
  readonly names: string[];
  /** The pid of server i, or undefined while it is down. */
  pid(i: number): number | undefined;
  /** SIGTERM (a clean shutdown), SIGKILL after a bound; resolves once it exited. Its store stays. */
  stop(i: number): Promise<void>;
  /** A crash: SIGKILL; resolves once it exited. Its store stays as the crash left it. */
  kill9(i: number): Promise<void>;
  /** Stops server i if it runs, then starts it on the same ports and store; resolves once JetStream is ready. */
  restart(i: number): Promise<void>;
  /** Stops every server and removes their folders. */
  stopAll(): Promise<void>;
}

interface Ports {
  client: number;
  cluster: number;
  monitor: number;
}

/**
 * Starts `n` servers with JetStream; more than one form a cluster (full mesh of routes). Resolves
 * once every one answers /healthz and, for a cluster, all agree on a meta leader that sees
 * every peer as current, so an R3 stream can be created at once.
 */
export async function startNatsServers(n: number, opts: { namePrefix?: string; /** Listen here instead of 127.0.0.1 (a network of namespaces' root address). */ host?: string } = {}): Promise<NatsServers> {
  const binary = requireBinary('nats-server', 'nats-server', installNatsServerCommand);
  const prefix = opts.namePrefix ?? 'geopay-nats';
  for (let attempt = 1; ; attempt++) {
    const ports: Ports[] = [];
    for (let i = 0; i < n; i++) ports.push({ client: await freePort(), cluster: await freePort(), monitor: await freePort() });
    const servers = await Promise.all(ports.map((p, i) => LocalNats.create(binary, `${prefix}-${i}`, p, n > 1 ? ports : undefined, opts.host ?? '127.0.0.1')));
    try {
      await Promise.all(servers.map((s) => s.start()));
      if (n > 1) await waitForMetaLeader(servers);
      return handle(servers);
    } catch (err) {
      await Promise.all(servers.map((s) => s.destroy()));
      if (attempt >= portAttempts || !(err instanceof PortTaken)) throw err;
    }
  }
}

function handle(servers: LocalNats[]): NatsServers {
  const at = (i: number): LocalNats => {
    const server = servers[i];
    if (!server) throw new Error(`no nats server ${i} (there are ${servers.length})`);
    return server;
  };
  return {
    urls: servers.map((s) => s.url),
    ports: servers.map((s) => s.ports.client),
    names: servers.map((s) => s.name),
    pid: (i) => at(i).pid,
    stop: (i) => at(i).stop('SIGTERM'),
    kill9: (i) => at(i).stop('SIGKILL'),
    async restart(i) {
      const server = at(i);
      await server.stop('SIGTERM');
      await startOncePortFree(() => server.start(), restartRetryMs);
      if (servers.length > 1) await waitForMetaLeader(servers.filter((s) => s.pid !== undefined));
    },
    async stopAll() {
      await Promise.all(servers.map((s) => s.destroy()));
    },
  };
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
}

class LocalNats {
  private proc: Running | undefined;

  private constructor(
    private readonly binary: string,
    readonly name: string,
    readonly ports: Ports,
    private readonly root: string,
    /** Every member's ports, for the routes; undefined for a lone server. */
    private readonly cluster: Ports[] | undefined,
    private readonly host: string,
  ) {}

  static async create(binary: string, name: string, ports: Ports, cluster: Ports[] | undefined, host: string): Promise<LocalNats> {
    const root = await mkdtemp(join(tmpdir(), `${name}-`));
    return new LocalNats(binary, name, ports, root, cluster, host);
  }

  get url(): string {
    return `nats://${this.host}:${this.ports.client}`;
  }
  get monitorUrl(): string {
    return `http://${this.host}:${this.ports.monitor}`;
  }
  get pid(): number | undefined {
    return this.proc?.child.pid;
  }
  private get logPath(): string {
    return join(this.root, 'nats-server.log');
  }

  private args(): string[] {
    const args = ['-n', this.name, '-a', this.host, '-p', String(this.ports.client), '-m', String(this.ports.monitor), '-js', '-sd', join(this.root, 'store')];
    if (this.cluster) {
      const routes = this.cluster.map((p) => `nats://${this.host}:${p.cluster}`).join(',');
      args.push('--cluster', `nats://${this.host}:${this.ports.cluster}`, '--routes', routes, '--cluster_name', 'geopay-test');
    }
    return args;
  }

  async start(): Promise<void> {
    if (this.proc) throw new Error(`${this.name} is already running (pid ${this.pid})`);
    const { child, exited: ended, logStart } = spawnServer(this.binary, this.args(), { cwd: this.root, logPath: this.logPath });
    live.set(child, this.root);
    const exited = ended.then(() => {
      live.delete(child);
      if (this.proc?.child === child) this.proc = undefined;
    });
    const running = { child, exited };
    this.proc = running;
    try {
      await this.waitHealthy(running, logStart);
    } catch (err) {
      child.kill('SIGKILL');
      await exited;
      throw err;
    }
  }

  async stop(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    proc.child.kill(signal);
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), stopTimeoutMs);
    await proc.exited;
    clearTimeout(timer);
  }

  async destroy(): Promise<void> {
    await this.stop('SIGTERM');
    await rm(this.root, { recursive: true, force: true });
  }

  /** Resolves once /healthz answers ok (JetStream enabled, its store recovered); rejects with the log's tail when the server exits first or never gets there. */
  private async waitHealthy(running: Running, logStart: number): Promise<void> {
    let exited = false;
    void running.exited.then(() => {
      exited = true;
    });
    const deadline = Date.now() + startTimeoutMs;
    let lastFailure = 'no probe yet';
    for (;;) {
      const failure = await probeHealth(this.monitorUrl);
      if (failure === undefined) return;
      lastFailure = failure;
      if (exited) {
        const tail = this.logTail(logStart);
        const message = `nats-server ${this.name} exited before it was ready (${lastFailure}):\n${tail}`;
        throw /address already in use/i.test(tail) ? new PortTaken(message) : new Error(message);
      }
      if (Date.now() > deadline) throw new Error(`nats-server ${this.name} not ready within ${startTimeoutMs} ms (${lastFailure}):\n${this.logTail(logStart)}`);
      await sleep(50);
    }
  }

  logTail(from = 0): string {
    try {
      return readFileSync(this.logPath).subarray(from).toString('utf8').slice(-tailChars);
    } catch {
      return '';
    }
  }
}

/** undefined when the server's /healthz says ok; otherwise why not. */
async function probeHealth(monitorUrl: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${monitorUrl}/healthz`, { signal: AbortSignal.timeout(probeTimeoutMs) });
    const body = await res.text();
    return res.ok && /"ok"/.test(body) ? undefined : `healthz ${res.status} ${body.trim()}`;
  } catch (err) {
    return err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
  }
}

interface MetaCluster {
  leader?: string;
  cluster_size?: number;
  replicas?: { name: string; current: boolean }[];
}

/** Waits until every server names the same meta leader and that leader sees every other server as a current peer. */
async function waitForMetaLeader(servers: LocalNats[]): Promise<void> {
  const deadline = Date.now() + startTimeoutMs;
  let last = 'no probe yet';
  for (;;) {
    const metas = await Promise.all(servers.map((s) => metaCluster(s.monitorUrl)));
    const leaders = new Set(metas.map((m) => m?.leader ?? ''));
    const leader = [...leaders][0] ?? '';
    const leaderIndex = servers.findIndex((s) => s.name === leader);
    const replicas = metas[leaderIndex]?.replicas ?? [];
    const others = servers.filter((s) => s.name !== leader).map((s) => s.name);
    if (leaders.size === 1 && leaderIndex >= 0 && others.every((name) => replicas.some((r) => r.name === name && r.current))) return;
    last = `leaders seen: ${[...leaders].join(',') || 'none'}; current peers of the leader: ${replicas.filter((r) => r.current).map((r) => r.name).join(',') || 'none'}`;
    if (Date.now() > deadline) throw new Error(`nats cluster has no meta leader with every peer current within ${startTimeoutMs} ms (${last})`);
    await sleep(100);
  }
}

async function metaCluster(monitorUrl: string): Promise<MetaCluster | undefined> {
  try {
    const res = await fetch(`${monitorUrl}/jsz`, { signal: AbortSignal.timeout(probeTimeoutMs) });
    const body = (await res.json()) as { meta_cluster?: MetaCluster };
    return body.meta_cluster;
  } catch {
    return undefined;
  }
}

