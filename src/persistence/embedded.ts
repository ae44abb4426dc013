/**
 * Embedded default database.
 *
 * When no DATABASE_URL is configured the service runs on PGlite (Postgres
 * compiled to WASM, running in-process) with its data under `dataDir`, exposed
 * over the PostgreSQL wire protocol on 127.0.0.1 by `@electric-sql/pglite-socket`.
 * The rest of the code then talks to it with the ordinary `pg` Pool and the same
 * SQL as against a real server.
 *
 * Caveat: PGlite is a single backend session. Every socket connection shares it
 * (session settings, temp tables, named prepared statements survive a
 * reconnect), so callers must use `new pg.Pool({ connectionString, max: 1 })`.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

export interface EmbeddedPostgres {
  connectionString: string;
  close(): Promise<void>;
}

const HOST = '127.0.0.1';

/**
 * How many simultaneous socket connections pglite-socket accepts (its default
 * is 1).
 *
 * The app uses one pooled connection; the headroom is so that a reconnect
 * overlapping the server-side cleanup of the previous socket (the server only
 * forgets a connection on a later tick after it closes), or a short-lived
 * extra client such as a CLI, is not refused. Above the limit the socket is
 * reset / sent a raw "Too many connections" line, which `pg` reports only as
 * "Connection terminated unexpectedly" or ECONNRESET.
 *
 * Extra connections share the one backend session. pglite-socket multiplexes
 * them per protocol message and, while one connection has a transaction open,
 * holds back the others' messages until it ends. Interleaving outside a
 * transaction is not guaranteed safe (another connection's Parse could land
 * between this one's Parse and Execute of the unnamed statement), so the app
 * must still use a pool of max 1.
 */
const MAX_SOCKET_CONNECTIONS = 4;

/** Simple-protocol Query message ('Q', int32 length, SQL, NUL) for `DISCARD ALL`. */
const RESET_SESSION_MESSAGE = (() => {
  const sql = Buffer.from('DISCARD ALL\0', 'utf8');
  const msg = Buffer.alloc(1 + 4 + sql.length);
  msg.write('Q', 0, 'ascii');
  msg.writeInt32BE(4 + sql.length, 1);
  sql.copy(msg, 5);
  return new Uint8Array(msg);
})();

export async function startEmbeddedPostgres(opts: {
  dataDir: string;
  port?: number /* 0 or undefined = free port */;
}): Promise<EmbeddedPostgres> {
  const dataDir = path.resolve(opts.dataDir);
  await mkdir(dataDir, { recursive: true });

  // debug: 0 (the default) keeps Postgres' stdout/stderr off the console.
  const db = await PGlite.create({ dataDir, debug: 0 });

  const server = new PGLiteSocketServer({
    db,
    host: HOST,
    port: opts.port ?? 0,
    maxConnections: MAX_SOCKET_CONNECTIONS,
  });
  try {
    await server.start();
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }

  // pglite-socket forwards each connection's StartupMessage to the one shared
  // backend, which does not reset anything: session settings (SET ...), named
  // prepared statements, temp tables and session advisory locks of a previous
  // connection would leak into the next one (e.g. pg.Pool's idle reconnect then
  // fails with `prepared statement "x" already exists`). Give a connection that
  // is the only one attached a fresh session, as a real server would. The
  // listener runs before the new socket's first bytes are processed (those are
  // handled on a later setImmediate tick), and the reset takes PGlite's query
  // lock, so it cannot land in the middle of another connection's work.
  server.addEventListener('connection', () => {
    if (server.getStats().activeConnections !== 1) return;
    void db
      .runExclusive(async () => {
        if (db.closed || db.isInTransaction()) return;
        await db.execProtocolRaw(RESET_SESSION_MESSAGE, { syncToFs: false });
      })
      .catch(() => undefined); // closing, or nothing to reset: harmless
  });

  // With port 0 the server records the OS-assigned port once listening.
  const conn = server.getServerConn(); // "127.0.0.1:<port>"
  const port = Number(conn.slice(conn.lastIndexOf(':') + 1));
  if (!Number.isInteger(port) || port <= 0) {
    await server.stop().catch(() => undefined);
    await db.close().catch(() => undefined);
    throw new Error(`embedded postgres: could not determine listening port from "${conn}"`);
  }

  // pglite-socket does no authentication; PGlite's only role is "postgres"
  // and its only database is "postgres". It answers an SSLRequest with 'N',
  // but disable SSL explicitly so pg never tries.
  const connectionString = `postgres://postgres@${HOST}:${port}/postgres?sslmode=disable`;

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      // Stopping the server destroys client sockets and rolls back a
      // transaction left open by one of them (queued on PGlite's mutex, so
      // db.close() below runs after it).
      try {
        await server.stop();
      } finally {
        // close() flushes to the data directory and shuts the backend down.
        if (!db.closed) await db.close();
      }
    })();
    return closing;
  };

  return { connectionString, close };
}
