// Runs the real server as a child process, so tests and benches can SIGKILL it and restart it
// on the same database: crash recovery can only be tested across a process boundary.
// Every child is tracked and SIGKILLed when this process exits, so a failing test never
// leaves a server holding a port or a database connection.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request as undiciRequest, type Dispatcher } from 'undici';

const projectRoot = fileURLToPath(new URL('../..', import.meta.url));

/**
 * The Node.js flags of `npm start` (package.json), those before `--import tsx src/main.ts`: every
 * node a test or a bench starts runs as a production node does (docs/tradeoffs.md, "The young generation").
 */
const startFlags: readonly string[] = (() => {
  const start = (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
  const argv = start.trim().split(/\s+/);
  const end = argv.indexOf('--import');
  if (argv[0] !== 'node' || end < 0) throw new Error(`package.json: the start script is not "node [flags] --import tsx src/main.ts": ${start}`);
  return argv.slice(1, end);
})();

/** Startup includes tsx compiling src/ and running migrations; 30 s is far past normal. */
const startTimeoutMs = 30_000;
/** A server that ignores SIGTERM this long is stuck; kill() escalates so it always resolves. */
const killEscalationMs = 10_000;
/** Enough of the output to see why a start failed, bounded so a chatty child cannot grow it. */
const tailChars = 8_000;

// pino logs share stdout, and the line may be plain text or inside a JSON "msg".
const listeningLine = /geopay listening on (http:\/\/[^\s"]+)/;

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

export interface ServerProcess {
  url: string;
  pid: number;
  /** Sends the signal (default SIGTERM) and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** The exit code, or null when a signal ended the process. */
  exited: Promise<number | null>;
  /** The last few kilobytes of stdout and stderr, for failure messages. */
  output(): string;
  /** The last `keepLogLines` whole lines of stdout (pino's JSON lines), oldest first; empty unless asked for. */
  logLines(): string[];
}

export interface StartServerOptions {
  databaseUrl: string;
  adminKey: string;
  env?: Record<string, string>;
  /** Keep this many of the latest stdout lines for logLines() (tests that read the logs); none by default. */
  keepLogLines?: number;
  /** An argv the node's command is appended to: ['ip', 'netns', 'exec', ns] runs it in a namespace (it execs: the pid is the node's). */
  wrap?: string[];
}

export function startServer(opts: StartServerOptions): Promise<ServerProcess> {
  // GEOPAY_CPU_PROFILE_DIR (benches): each node writes a V8 CPU profile there when it exits.
  const profileDir = process.env.GEOPAY_CPU_PROFILE_DIR;
  const profile = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const command = [...(opts.wrap ?? []), process.execPath, ...startFlags, ...profile, '--import', 'tsx', 'src/main.ts'];
  const child = spawn(command[0]!, command.slice(1), {
    cwd: projectRoot,
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      // Crash tests and the bench drive one tenant far past any production rate limit.
      RATE_LIMIT_READS_PER_S: '1000000',
      RATE_LIMIT_WRITES_PER_S: '1000000',
      ...opts.env,
      // Not overridable: a fixed port would make parallel test files collide.
      PORT: '0',
      DATABASE_URL: opts.databaseUrl,
      ADMIN_API_KEY: opts.adminKey,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);

  let tail = '';
  const keep = (chunk: string): void => {
    tail = (tail + chunk).slice(-tailChars);
  };
  const logs = keptLines(opts.keepLogLines ?? 0);

  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      children.delete(child);
      resolve(code);
    });
  });

  return new Promise<ServerProcess>((resolve, reject) => {
    let ready = false;
    let pending = '';

    const fail = (why: string): void => {
      if (ready) return;
      ready = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`server did not start: ${why}\n--- output tail ---\n${tail}`));
    };
    const timer = setTimeout(() => fail(`no listening line within ${startTimeoutMs} ms`), startTimeoutMs);

    child.once('error', (err) => fail(`spawn failed: ${err.message}`));
    void exited.then((code) => fail(`exited early with code ${String(code)}`));

    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', keep);
    // Keep draining stdout after startup: a full pipe would block the server's writes.
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      keep(chunk);
      logs.add(chunk);
      if (ready) return;
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const m = listeningLine.exec(line);
        if (!m) continue;
        ready = true;
        clearTimeout(timer);
        resolve({
          url: m[1]!,
          pid: child.pid!,
          exited,
          output: () => tail,
          logLines: logs.lines,
          kill: async (signal: NodeJS.Signals = 'SIGTERM') => {
            if (child.exitCode !== null || child.signalCode !== null) return;
            child.kill(signal);
            const escalate = setTimeout(() => child.kill('SIGKILL'), killEscalationMs);
            await exited;
            clearTimeout(escalate);
          },
        });
        return;
      }
    });
  });
}

/** The last `limit` whole lines of a stream, from its chunks (a line may span chunks). */
function keptLines(limit: number): { add(chunk: string): void; lines(): string[] } {
  const lines: string[] = [];
  let partial = '';
  return {
    add(chunk) {
      if (limit <= 0) return;
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
      if (lines.length > limit) lines.splice(0, lines.length - limit);
    },
    lines: () => [...lines],
  };
}

export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Dispatcher.ResponseData['headers'];
}

export interface Api {
  request<T = any>(
    method: Dispatcher.HttpMethod,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<ApiResponse<T>>;
  /** POST with an Idempotency-Key, a fresh one unless given (retries must pass the same). */
  post<T = any>(path: string, body?: unknown, idempotencyKey?: string): Promise<ApiResponse<T>>;
  get<T = any>(path: string): Promise<ApiResponse<T>>;
}

/**
 * A small JSON client bound to a base URL and a bearer key. It always reads the body, so the
 * keep-alive connection goes back to the pool; a dispatcher (Pool/Agent) may be passed to
 * control connection count and to be able to destroy it when the server dies.
 */
export function api(url: string, key: string, opts: { dispatcher?: Dispatcher } = {}): Api {
  const base = url.replace(/\/$/, '');
  const request = async <T>(
    method: Dispatcher.HttpMethod,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<ApiResponse<T>> => {
    const h: Record<string, string> = { authorization: `Bearer ${key}`, ...headers };
    // No content-type without a body: fastify refuses an empty body declared as JSON.
    if (body !== undefined) h['content-type'] = 'application/json';
    const res = await undiciRequest(base + path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      ...(opts.dispatcher ? { dispatcher: opts.dispatcher } : {}),
    });
    const text = await res.body.text();
    const type = String(res.headers['content-type'] ?? '');
    const parsed = text !== '' && type.includes('json') ? (JSON.parse(text) as T) : (text as T);
    return { status: res.statusCode, body: parsed, headers: res.headers };
  };
  return {
    request,
    post: (path, body, idempotencyKey = randomUUID()) =>
      request('POST', path, body, { 'idempotency-key': idempotencyKey }),
    get: (path) => request('GET', path),
  };
}
