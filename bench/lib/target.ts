// The server under test: one we start (a child process on embedded PGlite or on a fresh
// database of the local PostgreSQL, with ENGINE chosen) or one already running at a URL. It
// also knows how the checker reaches that server's database once the load is over.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/db.ts';
import { startServer, type ServerProcess } from '../../test/helpers/server-process.ts';

export type Engine = 'geopay' | 'baseline';
/** One server; a local cluster is started by bench/lib/session.ts startClusterTarget. */
export type StartMode = 'embedded' | 'postgres' | 'cluster';

export interface DatabaseHandle {
  url: string;
  /** PGlite is one session: the checker must use a pool of one connection there. */
  maxConnections: number;
  /** Whether the server still runs, so transfers in flight can still settle while we wait. */
  serverRunning: boolean;
  close(): Promise<void>;
}

export interface Target {
  url: string;
  adminKey: string;
  engine: string;
  /** What to print about where the data is. */
  describe: string;
  /** A started server, for its output when it dies. */
  server: ServerProcess | undefined;
  /**
   * The database for the checker. An embedded server is stopped first (PGlite's files belong
   * to one process at a time); a PostgreSQL one keeps running so its relay can settle
   * transfers still in flight.
   */
  openDatabase(): Promise<DatabaseHandle | undefined>;
  /** Stops what we started; drops the database unless it was to be kept. */
  stop(): Promise<void>;
}

export interface StartOptions {
  start: Exclude<StartMode, 'cluster'>;
  engine: Engine;
  keepDb: boolean;
  /** Extra environment for the server (PG_POOL_MAX=..., LOG_LEVEL=...). */
  serverEnv: Record<string, string>;
}

export async function startTarget(opts: StartOptions): Promise<Target> {
  const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  const env = { LOG_LEVEL: 'warn', ...opts.serverEnv, ENGINE: opts.engine };
  if (opts.start === 'postgres') {
    const db: TestDatabase = await createTestDatabase(`loadtest_${opts.engine}`);
    let server: ServerProcess;
    try {
      server = await startServer({ databaseUrl: db.url, adminKey, env });
    } catch (err) {
      if (!opts.keepDb) await db.drop();
      throw err;
    }
    return {
      url: server.url, adminKey, engine: opts.engine, server,
      describe: `PostgreSQL database ${db.name}${opts.keepDb ? ' (kept)' : ' (dropped at the end)'}`,
      openDatabase: async () => ({ url: db.url, maxConnections: 4, serverRunning: true, close: async () => undefined }),
      stop: async () => {
        await server.kill();
        if (!opts.keepDb) await db.drop();
      },
    };
  }

  // Embedded: an empty DATABASE_URL makes the server run PGlite in a data directory of ours.
  const dataDir = await mkdtemp(join(tmpdir(), 'geopay-loadtest-'));
  let server: ServerProcess;
  try {
    server = await startServer({ databaseUrl: '', adminKey, env: { ...env, DATA_DIR: dataDir } });
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  let opened: { close(): Promise<void> } | undefined;
  return {
    url: server.url, adminKey, engine: opts.engine, server,
    describe: `embedded PGlite in ${dataDir}${opts.keepDb ? ' (kept)' : ' (removed at the end)'}`,
    openDatabase: async () => {
      await server.kill();
      // Imported here so a run against PostgreSQL never loads PGlite.
      const { startEmbeddedPostgres } = await import('../../src/persistence/embedded.ts');
      const pg = await startEmbeddedPostgres({ dataDir });
      opened = pg;
      return { url: pg.connectionString, maxConnections: 1, serverRunning: false, close: () => pg.close() };
    },
    stop: async () => {
      await server.kill();
      await opened?.close().catch(() => undefined);
      if (!opts.keepDb) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A server someone else runs; the checker needs its database URL to look inside. */
export function remoteTarget(url: string, adminKey: string, databaseUrl: string | undefined, engine: string): Target {
  return {
    url: url.replace(/\/$/, ''), adminKey, engine, server: undefined,
    describe: databaseUrl ? 'database given by --database-url' : 'database unknown (no --database-url): the ledger is not checked',
    openDatabase: async () => (databaseUrl ? { url: databaseUrl, maxConnections: 4, serverRunning: true, close: async () => undefined } : undefined),
    stop: async () => undefined,
  };
}

/**
 * The server's Prometheus exposition, read once: a lookup by full metric name (process_cpu_seconds_total)
 * of the samples whose labels contain `having` (`state="waiting"`), or all of them, summed; NaN when absent.
 */
export async function readExposition(url: string): Promise<(name: string, having?: string) => number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  // Every sample of the family, whatever its labels (each node's carry node and region), summed.
  return (name, having) => {
    const values = [...text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm'))]
      .filter((m) => having === undefined || (m[1] ?? '').includes(having))
      .map((m) => Number(m[2]));
    return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0);
  };
}

/** The server's geopay metrics, read once: a lookup by name without the `geopay_` prefix (NaN when absent). */
export async function readMetrics(url: string): Promise<(name: string) => number> {
  const metric = await readExposition(url);
  return (name) => metric(`geopay_${name}`);
}
