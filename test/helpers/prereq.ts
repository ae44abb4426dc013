// What the tests need from this machine (a binary, a running PostgreSQL or Redis), checked
// before a test uses it, so that a newcomer's run fails with one line naming what is missing
// and the Debian command that installs or starts it, instead of a stack trace from inside pg,
// ioredis or playwright. The same commands are in README.md, "Test it"; keep the two in step.
import { accessSync, constants, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { delimiter, join } from 'node:path';
import pg from 'pg';

/** Bound on one probe of a server: a local one answers in milliseconds. */
const probeTimeoutMs = 3_000;
const postgresBinDir = '/usr/lib/postgresql/15/bin';

export const installPostgresCommand = 'apt-get install -y postgresql-15';
export const startPostgresCommand = 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start';
export const installRedisCommand = 'apt-get install -y redis-server';
export const startRedisCommand = (port = 6379): string => `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port ${port} --save "" --appendonly no`;
export const installChromiumCommand = 'apt-get install -y chromium';

/**
 * A prerequisite that is not there. The message is the whole report: the stack is cut to that
 * one line, because its frames would only point into this file and push the message off screen.
 */
export class MissingPrerequisite extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MissingPrerequisite';
    this.stack = `${this.name}: ${message}`;
  }
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The executable `command` names: itself when it holds a '/', else the first match on PATH. */
function resolveExecutable(command: string): string | undefined {
  if (command.includes('/')) return isExecutable(command) ? command : undefined;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir !== '' && isExecutable(join(dir, command))) return join(dir, command);
  }
  return undefined;
}

/**
 * Throws MissingPrerequisite unless `command` (an absolute path, or a name looked up on PATH
 * the way spawn() will) is an executable file; returns its path.
 */
export function requireBinary(name: string, command: string, install: string): string {
  const found = resolveExecutable(command);
  if (found !== undefined) return found;
  const where = command.includes('/') ? `no executable ${command}` : `no ${command} on PATH`;
  throw new MissingPrerequisite(`${name} is missing (${where}); install it: ${install}`);
}

/**
 * The browser at `path`: pass bench/lib/browser.ts's CHROMIUM_PATH, the one it launches. Not
 * imported here, since that would load playwright-core into every test that only needs a database.
 */
export function requireChromium(path: string): string {
  return requireBinary('chromium', path, installChromiumCommand);
}

/** redis-server on PATH, for the tests that start Redis processes of their own. */
export function requireRedisServerBinary(): string {
  return requireBinary('redis-server', 'redis-server', installRedisCommand);
}

/**
 * initdb and postgres of PostgreSQL 15 (in Debian's postgresql-15, beside the machine's own
 * cluster), for the tests and the local cluster that start instances of their own; returns
 * the folder that holds them. `binDir` is a parameter so the test can point it at nothing.
 */
export function requirePostgresServerBinaries(binDir = postgresBinDir): string {
  for (const name of ['initdb', 'postgres']) {
    requireBinary(`PostgreSQL 15 ${name}`, join(binDir, name), installPostgresCommand);
  }
  return binDir;
}

/** Debian's package holds both prometheus and promtool. */
export const installPrometheusCommand = 'apt-get install -y prometheus';

/** The prometheus server at `path` (scripts/prometheus.ts's), for the local cluster's monitoring and its test. */
export function requirePrometheus(path: string): string {
  return requireBinary('prometheus', path, installPrometheusCommand);
}

/** promtool on PATH, for the alert rules' checks and unit tests (test/alerts.test.ts). */
export function requirePromtool(): string {
  return requireBinary('promtool', 'promtool', installPrometheusCommand);
}

const isLoopback = (host: string): boolean => host === '127.0.0.1' || host === 'localhost' || host === '[::1]';

/** Which servers already answered, so a helper called per test database probes once per worker. */
const answered = new Set<string>();

/**
 * Throws MissingPrerequisite unless the PostgreSQL at `url` accepts the tests' user without a
 * password. The hint depends on why not: not installed, not running, or not on trust auth.
 */
export async function requirePostgres(url = 'postgres://postgres@127.0.0.1:5432/postgres'): Promise<void> {
  if (answered.has(url)) return;
  const target = new URL(url);
  const at = `${target.hostname}:${target.port || '5432'}`;
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: probeTimeoutMs });
  // A failed connect can also emit 'error' on the client; the rejection below is the report.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw new MissingPrerequisite(postgresHint(err, at, target));
  } finally {
    await client.end().catch(() => undefined);
  }
  answered.add(url);
}

function postgresHint(err: unknown, at: string, target: URL): string {
  const e = err as { code?: string; message?: string };
  const why = e.code ?? e.message ?? String(err);
  // 28P01 invalid_password, 28000 no pg_hba.conf entry; pg says "password" when asked for one it lacks.
  if (e.code === '28P01' || e.code === '28000' || /password/i.test(e.message ?? '')) {
    return `PostgreSQL on ${at} refuses user ${target.username || 'postgres'} without a password (${why}); the tests need trust auth: `
      + `set the 127.0.0.1/32 line of /etc/postgresql/15/main/pg_hba.conf to trust, then pg_ctlcluster --skip-systemctl-redirect 15 main reload`;
  }
  if (!isLoopback(target.hostname)) return `PostgreSQL is not reachable on ${at} (${why}); check TEST_DATABASE_URL`;
  if (!isExecutable(join(postgresBinDir, 'postgres')) || clusters().length === 0) {
    return `PostgreSQL 15 is not installed (no ${postgresBinDir}/postgres or no cluster under /etc/postgresql) and nothing answers on ${at}; `
      + `install it: ${installPostgresCommand}, then start it: ${startPostgresCommand}`;
  }
  return `PostgreSQL is not running on ${at} (${why}); start it: ${startPostgresCommand}`;
}

function clusters(): string[] {
  try {
    return readdirSync('/etc/postgresql');
  } catch {
    return [];
  }
}

/** Throws MissingPrerequisite unless a Redis server at `url` answers PING (any reply will do). */
export async function requireRedis(url = 'redis://127.0.0.1:6379'): Promise<void> {
  if (answered.has(url)) return;
  const target = new URL(url);
  const host = target.hostname.replace(/^\[|\]$/g, '');
  const port = Number(target.port || '6379');
  const at = `${target.hostname}:${port}`;
  const failure = await pingRedis(host, port);
  if (failure === undefined) {
    answered.add(url);
    return;
  }
  if (!isLoopback(target.hostname)) throw new MissingPrerequisite(`Redis is not reachable on ${at} (${failure}); check TEST_REDIS_URL`);
  if (resolveExecutable('redis-server') === undefined) {
    throw new MissingPrerequisite(`Redis is not installed (no redis-server on PATH) and nothing answers on ${at}; install it: ${installRedisCommand}, then start it: ${startRedisCommand(port)}`);
  }
  throw new MissingPrerequisite(`Redis is not running on ${at} (${failure}); start it: ${startRedisCommand(port)}`);
}

/** undefined when the server replied to PING; otherwise why not. */
function pingRedis(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (failure: string | undefined) => {
      socket.destroy();
      resolve(failure);
    };
    socket.setTimeout(probeTimeoutMs, () => done(`no answer within ${probeTimeoutMs} ms`));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', () => done(undefined));
  });
}
