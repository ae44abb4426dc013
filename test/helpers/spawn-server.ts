// A server process of a test's own (nats-server, postgres): detached into its own process group,
// so a Ctrl-C at the terminal reaches the test runner (or `npm run cluster`), which stops it in
// order; its output appended straight to a log file (opened here, inherited), so no pipe can
// fill up and block it, and the log outlives the run for a post-mortem.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, openSync, statSync } from 'node:fs';

export interface SpawnedServer {
  child: ChildProcess;
  /** Resolves once the process exited. */
  exited: Promise<void>;
  /** The log's size before this start: what the server wrote since starts there. */
  logStart: number;
}

export function spawnServer(command: string, args: string[], opts: { cwd: string; logPath: string; spawn?: SpawnOptions }): SpawnedServer {
  const logStart = fileSize(opts.logPath);
  const logFd = openSync(opts.logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, { ...opts.spawn, cwd: opts.cwd, detached: true, stdio: ['ignore', logFd, logFd] });
  } finally {
    closeSync(logFd);
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, exited, logStart };
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** The server could not bind its port: another process holds it, for now or for good. */
export class PortTaken extends Error {}

/**
 * `start()` again while its port is taken (a process that let it go a moment ago can still hold
 * it), for at most `ms`; any other failure, or the port still taken after that, is thrown.
 */
export async function startOncePortFree(start: () => Promise<void>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await start();
      return;
    } catch (err) {
      if (!(err instanceof PortTaken) || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
