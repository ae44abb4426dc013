// PostgreSQL servers of their own for tests and `npm run cluster -- --separate-postgres`: each
// one initdb'd into a temporary folder, run as the postgres OS user on a free loopback port, and
// stopped, crashed and restarted by pid (a region's database outage is a real server going away).
// Only the pids started here are ever signalled; a process 'exit' hook SIGKILLs what still runs.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { chownSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { freePort } from './cluster.ts';
import { MissingPrerequisite, requirePostgresServerBinaries } from './prereq.ts';
import { PortTaken, spawnServer, startOncePortFree } from './spawn-server.ts';

/** A fresh server is up in well under a second and crash recovery of a test's WAL in a few; 20 s means it will not. */
const startTimeoutMs = 20_000;
/** A fast shutdown that takes this long is stuck: SIGKILL, so stop() always resolves. */
const stopTimeoutMs = 10_000;
/** A port released a moment ago can be taken by another process; restart() retries binding it this long. */
const restartRetryMs = 5_000;
/** Attempts at a fresh free port when another process wins the race for it. */
const portAttempts = 5;
const tailChars = 4_000;

/**
 * Small on purpose: several instances share a 2-core machine with the main cluster. fsync stays
 * on: these servers hold journals of money in the outage tests, and an acknowledged commit must
 * survive a crash there exactly as in production. Only 127.0.0.1 listens; the unix socket goes
 * into the instance's own folder, never /var/run/postgresql where the machine's cluster has its.
 */
const settings = (port: number, socketDir: string, name: string, also: string | undefined): Record<string, string> => ({
  listen_addresses: also ? `127.0.0.1,${also}` : '127.0.0.1',
  port: String(port),
  unix_socket_directories: socketDir,
  cluster_name: name,
  shared_buffers: '16MB',
  max_connections: '40',
  fsync: 'on',
  synchronous_commit: 'on',
  logging_collector: 'off',
  log_min_messages: 'warning',
});

/** Trust on the loopback only (and the run's own network, when it listens there too); no unix-socket line at all. */
const hbaConf = (network: string | undefined): string =>
  `host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust\n${network ? `host all all ${network} trust\n` : ''}`;

export interface PgInstance {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** The postmaster's pid: the current one while running, the last one after it stopped. */
  readonly pid: number;
  readonly running: boolean;
  /** The postmaster and its children (backends, checkpointer, ...) now; empty when stopped. */
  processIds(): number[];
  /** Fast shutdown (SIGINT to this postmaster), SIGKILL after a bound; resolves once it exited. */
  stop(): Promise<void>;
  /** Starts the server again on the same port and data directory; resolves once it accepts connections. */
  start(): Promise<void>;
  /** A crash: SIGKILL to the postmaster and all its children at once; resolves once all are gone. */
  kill9(): Promise<void>;
}

export interface PgInstances {
  readonly instances: PgInstance[];
  /** Stops every instance and removes their temporary folders. */
  stopAll(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Start of the temporary folders' names and of each server's cluster_name (seen in ps); default `geopay-pg`. */
  namePrefix?: string;
  /**
   * Also listen on `ip` (this namespace's address on a network of namespaces, test/helpers/netns.ts),
   * trusting `network` (its CIDR); the url then names `ip`, so processes in the namespaces reach it.
   */
  listen?: { ip: string; network: string };
}

interface OsUser {
  uid: number;
  gid: number;
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
}

const live = new Map<ChildProcess, string>();
process.once('exit', () => {
  for (const [child, root] of live) {
    const pid = child.pid;
    if (pid === undefined) continue;
    for (const p of [pid, ...childPids(pid)]) signal(p, 'SIGKILL');
    rmSync(root, { recursive: true, force: true, maxRetries: 2 });
  }
});

/** Starts `n` PostgreSQL 15 servers, each with a cluster of its own (its own initdb). */
export async function startPostgresInstances(n: number, opts: StartPostgresOptions = {}): Promise<PgInstances> {
  const binDir = requirePostgresServerBinaries();
  const user = postgresUser();
  const prefix = opts.namePrefix ?? 'geopay-pg';
  // Settled, not all: on a failure every instance that did start is stopped, none left starting.
  const started = await Promise.allSettled(Array.from({ length: n }, (_, i) => createInstance(binDir, user, `${prefix}-${i}`, opts.listen)));
  const instances = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const stopAll = async (): Promise<void> => {
    await Promise.all(instances.map((i) => i.destroy()));
  };
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) {
    await stopAll();
    throw failed.reason;
  }
  return { instances, stopAll };
}

/** One server; stopAll() of the pair stops it and removes its folder. */
export async function startPostgresInstance(opts: StartPostgresOptions = {}): Promise<PgInstance & { stopAll(): Promise<void> }> {
  const { instances, stopAll } = await startPostgresInstances(1, opts);
  return Object.assign(instances[0]!, { stopAll });
}

/** The postgres OS user (Debian's package creates it): initdb and postgres refuse to run as root. */
function postgresUser(): OsUser {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  const fields = line?.split(':');
  if (!fields || fields.length < 4) {
    throw new MissingPrerequisite('the postgres OS user is missing (no postgres in /etc/passwd); install PostgreSQL: apt-get install -y postgresql-15');
  }
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** Spawn options that run a child as `user`: root switches to it; the user itself needs no switch. */
function asUser(user: OsUser): SpawnOptions {
  const me = process.getuid?.();
  if (me === user.uid) return {};
  if (me === 0) return { uid: user.uid, gid: user.gid };
  throw new Error(`starting PostgreSQL instances needs root or the postgres user (uid ${user.uid}); this process runs as uid ${me}`);
}

async function createInstance(binDir: string, user: OsUser, name: string, listen: StartPostgresOptions['listen']): Promise<LocalPostgres> {
  const root = await mkdtemp(join(tmpdir(), `${name}-`));
  try {
    chownSync(root, user.uid, user.gid);
    const dataDir = join(root, 'data');
    await initdb(binDir, user, root, dataDir);
    // Overwriting initdb's file keeps its owner (postgres) and mode.
    writeFileSync(join(dataDir, 'pg_hba.conf'), hbaConf(listen?.network));
    const instance = new LocalPostgres(binDir, user, name, root, dataDir, listen?.ip);
    await instance.startOnFreePort();
    return instance;
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

function initdb(binDir: string, user: OsUser, root: string, dataDir: string): Promise<void> {
  // --no-sync: initdb's files only have to outlive a process crash (the page cache keeps them),
  // not a power loss; syncing them would add seconds per instance. The server itself fsyncs.
  const args = ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync', '--no-instructions'];
  const child = spawn(join(binDir, 'initdb'), args, { ...asUser(user), cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-tailChars);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`initdb ${dataDir} could not start: ${err.message}`)));
    child.once('exit', (code, sig) => {
      if (code === 0) resolve();
      else reject(new Error(`initdb ${dataDir} failed (${sig ?? `exit ${code}`}):\n${output}`));
    });
  });
}

class LocalPostgres implements PgInstance {
  private proc: Running | undefined;
  private lastPid = 0;
  private portNumber = 0;

  constructor(
    private readonly binDir: string,
    private readonly user: OsUser,
    private readonly name: string,
    private readonly root: string,
    readonly dataDir: string,
    /** An address it listens on besides 127.0.0.1, which the url names. */
    private readonly ip: string | undefined,
  ) {}

  get port(): number {
    return this.portNumber;
  }
  get url(): string {
    return `postgres://postgres@${this.ip ?? '127.0.0.1'}:${this.portNumber}/postgres`;
  }
  get pid(): number {
    return this.lastPid;
  }
  get running(): boolean {
    return this.proc !== undefined;
  }
  private get logPath(): string {
    return join(this.root, 'postgres.log');
  }

  processIds(): number[] {
    return this.proc ? [this.lastPid, ...childPids(this.lastPid)] : [];
  }

  /** First start: a fresh free port per attempt, since another process can take one between freePort() and the bind. */
  async startOnFreePort(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.portNumber = await freePort();
      try {
        await this.launch();
        return;
      } catch (err) {
        if (attempt >= portAttempts || !(err instanceof PortTaken)) throw err;
      }
    }
  }

  async start(): Promise<void> {
    if (this.proc) throw new Error(`${this.name} is already running (pid ${this.lastPid})`);
    await startOncePortFree(() => this.launch(), restartRetryMs);
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    signal(this.lastPid, 'SIGINT');
    const timer = setTimeout(() => this.killTree(), stopTimeoutMs);
    await proc.exited;
    clearTimeout(timer);
  }

  async kill9(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    // The whole tree, as a machine crash takes it: a postmaster killed alone leaves backends
    // attached to its shared memory, and a restart refuses to start until they have noticed.
    const children = this.killTree();
    await proc.exited;
    await waitGone(children);
  }

  /** stop(), then the folder goes too. */
  async destroy(): Promise<void> {
    await this.stop();
    await rm(this.root, { recursive: true, force: true });
  }

  private killTree(): number[] {
    const children = childPids(this.lastPid);
    for (const p of [this.lastPid, ...children]) signal(p, 'SIGKILL');
    return children;
  }

  private async launch(): Promise<void> {
    const proc = this.spawnPostmaster();
    const logStart = proc.logStart;
    try {
      await waitReady(this.url, this.dataDir, proc.running, () => this.logTail(logStart));
    } catch (err) {
      proc.running.child.kill('SIGKILL');
      await proc.running.exited;
      throw err;
    }
  }

  private spawnPostmaster(): { running: Running; logStart: number } {
    const args = ['-D', this.dataDir];
    for (const [k, v] of Object.entries(settings(this.portNumber, this.root, this.name, this.ip))) args.push('-c', `${k}=${v}`);
    // Its own process group: a Ctrl-C at the terminal of `npm run cluster` must not take the
    // databases down before the nodes have stopped; the owner of this object stops them.
    const { child, exited: ended, logStart } = spawnServer(join(this.binDir, 'postgres'), args, { cwd: this.root, logPath: this.logPath, spawn: asUser(this.user) });
    live.set(child, this.root);
    const exited = ended.then(() => {
      live.delete(child);
      if (this.proc?.child === child) this.proc = undefined;
    });
    const running = { child, exited };
    this.proc = running;
    this.lastPid = child.pid ?? 0;
    return { running, logStart };
  }

  private logTail(from: number): string {
    try {
      return readFileSync(this.logPath).subarray(from).toString('utf8').slice(-tailChars);
    } catch {
      return '';
    }
  }
}

/** Resolves once our server at `url` answers a query; rejects with the log's tail when it exits first or never answers. */
async function waitReady(url: string, dataDir: string, running: Running, logTail: () => string): Promise<void> {
  let exited = false;
  void running.exited.then(() => {
    exited = true;
  });
  const spawnFailure = new Promise<Error>((resolve) => running.child.once('error', resolve));
  const deadline = Date.now() + startTimeoutMs;
  let lastError = 'no attempt yet';
  for (;;) {
    const failure = await Promise.race([spawnFailure, probe(url, dataDir)]);
    if (failure === undefined) return;
    lastError = failure instanceof Error ? failure.message : failure;
    if (exited || failure instanceof Error) {
      const tail = logTail();
      const message = `postgres for ${url} exited before accepting connections (${lastError}):\n${tail}`;
      throw /could not bind|Address already in use/i.test(tail) ? new PortTaken(message) : new Error(message);
    }
    if (Date.now() > deadline) throw new Error(`postgres for ${url} not accepting connections within ${startTimeoutMs} ms (${lastError}):\n${logTail()}`);
    await sleep(100);
  }
}

/**
 * undefined when the server on `url` answered and is the one on `dataDir`; otherwise why not
 * (refused, starting up, in recovery, or another server that won the race for the port).
 */
async function probe(url: string, dataDir: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ dir: string }>(`SELECT current_setting('data_directory') AS dir`);
    return rows[0]?.dir === dataDir ? undefined : `another server (${rows[0]?.dir}) answers on this port`;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return e.code ?? e.message ?? String(err);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Sends `sig` to `pid` if it still exists; a process that is already gone is what was wanted. */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/**
 * The pids whose parent is `ppid`, from /proc (Linux). PostgreSQL puts every child in a process
 * group of its own (setsid), so the group of the postmaster does not reach them.
 */
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (stat && stat.ppid === ppid && stat.state !== 'Z') out.push(Number(entry));
  }
  return out;
}

/** Whether `pid` is a process now; a zombie (exited, not yet reaped by its new parent) is not. */
export function isAlive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.state !== 'Z';
}

function procStat(pid: number): { state: string; ppid: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
  const [state, ppid] = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: state ?? '', ppid: Number(ppid) };
}

/** Waits until none of `pids` is alive; they were SIGKILLed, so this is short. */
async function waitGone(pids: number[]): Promise<void> {
  const deadline = Date.now() + stopTimeoutMs;
  while (pids.some(isAlive)) {
    if (Date.now() > deadline) throw new Error(`processes ${pids.filter(isAlive).join(',')} still alive ${stopTimeoutMs} ms after SIGKILL`);
    await sleep(20);
  }
}

