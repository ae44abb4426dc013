// A real Prometheus (Debian's /usr/bin/prometheus) scraping the nodes of a local cluster, with
// geopay's alert rules loaded: `npm run cluster -- --prometheus` and test/prometheus.test.ts use
// it. Its config and TSDB live in a temp folder of their own, removed by stop(); only the pid
// started here is ever signalled, and a process 'exit' hook SIGKILLs it if it is still running.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/helpers/cluster.ts';
import { requirePrometheus } from '../test/helpers/prereq.ts';

/** The alert rules the local cluster loads; their unit tests are ops/prometheus/alerts.test.yml. */
export const alertRulesPath = fileURLToPath(new URL('../ops/prometheus/alerts.yml', import.meta.url));
export const prometheusBinary = '/usr/bin/prometheus';

/** Prometheus opens its TSDB and loads its rules in well under a second; 20 s means it will not. */
const readyTimeoutMs = 20_000;
/** SIGTERM flushes the head block and exits within a second or two; past this it is stuck. */
const stopEscalationMs = 10_000;
/** Another process can take the port between freePort() and the bind: tries before giving up. */
const bindAttempts = 5;
const tailChars = 8_000;

const children = new Set<ChildProcess>();
const folders = new Set<string>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  for (const dir of folders) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
});

export interface PrometheusOptions {
  /** Base URLs of the nodes (http://127.0.0.1:PORT); each is scraped at <url>/metrics. */
  targets: string[];
  /** An alert rules file, loaded at start; a file that is missing or does not load fails the start. */
  rulesFile?: string;
  /** Scrape and rule evaluation interval; 5 s by default, 1 s in tests. */
  scrapeIntervalS?: number;
}

export interface RunningPrometheus {
  /** http://127.0.0.1:PORT: the UI and the HTTP API (/api/v1/...). */
  url: string;
  pid: number;
  configPath: string;
  /** The exit code, or null when a signal ended the process. */
  exited: Promise<number | null>;
  /** The last few kilobytes of its log, for failure messages. */
  output(): string;
  /** SIGTERM (SIGKILL after a bound), then removes its temp folder. Safe to call twice. */
  stop(): Promise<void>;
}

/** The scrape config: one job "geopay" (the alert rules select on it), every node a static target. */
export function prometheusConfig(targets: string[], rulesFile: string | undefined, intervalS: number): string {
  const hosts = targets.map((t) => new URL(t).host);
  return [
    'global:',
    `  scrape_interval: ${intervalS}s`,
    `  scrape_timeout: ${intervalS}s`,
    `  evaluation_interval: ${intervalS}s`,
    ...(rulesFile ? ['rule_files:', `  - ${JSON.stringify(rulesFile)}`] : []),
    'scrape_configs:',
    '  - job_name: geopay',
    '    metrics_path: /metrics',
    '    static_configs:',
    `      - targets: [${hosts.map((h) => JSON.stringify(h)).join(', ')}]`,
    '',
  ].join('\n');
}

/** Writes the config into a new temp folder and starts Prometheus on it; resolves once /-/ready answers 200. */
export async function startPrometheus(opts: PrometheusOptions): Promise<RunningPrometheus> {
  requirePrometheus(prometheusBinary);
  const intervalS = opts.scrapeIntervalS ?? 5;
  if (!Number.isInteger(intervalS) || intervalS < 1) throw new Error(`scrapeIntervalS: a whole number of seconds >= 1, got ${intervalS}`);
  if (opts.targets.length === 0) throw new Error('startPrometheus: no targets');
  // rule_files entries are globs: a path that does not exist matches nothing and Prometheus
  // would start with no rules at all, in silence.
  const rulesFile = opts.rulesFile === undefined ? undefined : resolve(opts.rulesFile);
  if (rulesFile !== undefined) {
    try {
      accessSync(rulesFile, constants.R_OK);
    } catch (err) {
      throw new Error(`alert rules file ${rulesFile} is not readable: ${(err as Error).message}`, { cause: err });
    }
  }

  const dir = mkdtempSync(join(tmpdir(), 'geopay-prometheus-'));
  folders.add(dir);
  const configPath = join(dir, 'prometheus.yml');
  writeFileSync(configPath, prometheusConfig(opts.targets, rulesFile, intervalS));
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        return await launch(dir, configPath, await freePort());
      } catch (err) {
        if (attempt >= bindAttempts || !/address already in use/.test(String(err))) throw err;
      }
    }
  } catch (err) {
    removeFolder(dir);
    throw err;
  }
}

function removeFolder(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  folders.delete(dir);
}

async function launch(dir: string, configPath: string, port: number): Promise<RunningPrometheus> {
  const child = spawn(
    prometheusBinary,
    [`--config.file=${configPath}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
    // Own process group: a Ctrl-C at the terminal of `npm run cluster` reaches only the script,
    // which stops this process itself.
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  children.add(child);
  let tail = '';
  const keep = (chunk: string): void => {
    tail = (tail + chunk).slice(-tailChars);
  };
  // Drained for the life of the process: a full pipe would block its logging.
  for (const stream of [child.stdout!, child.stderr!]) {
    stream.setEncoding('utf8');
    stream.on('data', keep);
  }
  let spawnError: string | undefined;
  const exited = new Promise<number | null>((done) => {
    child.once('exit', (code) => {
      children.delete(child);
      done(code);
    });
    // A process that never started emits 'error' and perhaps no 'exit'.
    child.once('error', (err) => {
      spawnError = err.message;
      if (child.pid === undefined) {
        children.delete(child);
        done(null);
      }
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const running = (): boolean => child.pid !== undefined && child.exitCode === null && child.signalCode === null;
  const why = await Promise.race([
    waitReady(url, running),
    exited.then((code) => (spawnError !== undefined ? `spawn failed: ${spawnError}` : `exited with ${String(code)} before it was ready`)),
  ]);
  if (why !== undefined) {
    if (running()) child.kill('SIGKILL');
    await exited;
    throw new Error(`prometheus did not start: ${why}\n--- output tail ---\n${tail}`);
  }
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (running()) child.kill('SIGTERM');
      const escalate = setTimeout(() => child.kill('SIGKILL'), stopEscalationMs);
      await exited;
      clearTimeout(escalate);
      removeFolder(dir);
    })();
    return stopping;
  };
  return { url, pid: child.pid!, configPath, exited, output: () => tail, stop };
}

/** undefined once GET /-/ready answers 200; else why not, after the bound (or as soon as the process is gone). */
async function waitReady(url: string, running: () => boolean): Promise<string | undefined> {
  const deadline = Date.now() + readyTimeoutMs;
  while (running()) {
    try {
      const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) });
      await res.body?.cancel();
      if (res.status === 200) return undefined;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) return `/-/ready did not answer 200 within ${readyTimeoutMs} ms`;
    await sleep(100);
  }
  // The exit branch of the race reports it, with the exit code.
  return new Promise<string | undefined>(() => undefined);
}
