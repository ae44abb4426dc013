// One run against one server: the target (started or already running), the load client on
// it and the request log, released together whatever happens (a failure, a Ctrl-C), and the
// checker on the target's database afterwards. loadtest, compare, core and batch run this way.
import pg from 'pg';
import { check, formatResult } from '../checker.ts';
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
export function withFreshServer<T>(client: SessionOptions<T>['client'], body: (s: Session) => Promise<T>): Promise<T> {
  return withSession({
    target: () => startTarget({ start: 'postgres', engine: 'geopay', keepDb: false, serverEnv: {} }),
    client,
    // A server that dies mid-run turns every later request into ECONNREFUSED; say why at once.
    onServerExit: (message, output) => console.error(`${message}:\n${output}`),
    onError: (err, output) => {
      if (output !== undefined) console.error(`--- server output tail ---\n${output}`);
      throw err;
    },
  }, body);
}

/** Runs the checker on the target's database; undefined when there is none to read. */
export async function checkTarget(target: Target, requests: string | undefined, settleMs: number): Promise<CheckReport | undefined> {
  const handle = await target.openDatabase();
  if (!handle) return undefined;
  // Bounded like everything else: a checker query that runs away must not hang the run.
  const pool = new pg.Pool({ connectionString: handle.url, max: handle.maxConnections, statement_timeout: 300_000 });
  try {
    // A stopped server settles nothing: waiting for its transfers in flight would be in vain.
    const settleTimeoutMs = handle.serverRunning ? settleMs : 0;
    const r = await check(pool, { ...(requests ? { requests } : {}), settleTimeoutMs, engine: target.engine === 'baseline' ? 'baseline' : 'auto' });
    process.stdout.write(`${formatResult(r)}\n`);
    return { engine: target.engine, ok: r.ok, failures: r.failures, notes: r.notes, stats: r.stats };
  } finally {
    await pool.end();
    await handle.close();
  }
}
