// Whether a module is the program node was asked to run, so one file can be both a CLI and
// an importable module (the checker is both). Paths are compared after resolving symlinks.
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export function isMain(moduleUrl: string): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(resolve(entry)) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

const cleanups = new Set<() => Promise<void>>();

/**
 * Registers what must be undone if the run is interrupted (Ctrl-C, a timeout's SIGTERM): a
 * started server and its database would otherwise outlive us. Returns the unregister call.
 */
export function onInterrupt(cleanup: () => Promise<void>): () => void {
  cleanups.add(cleanup);
  return () => { cleanups.delete(cleanup); };
}

let interrupted = false;

/** Whether a signal is ending the run (a server stopping now is our doing, not news). */
export const isInterrupted = (): boolean => interrupted;

/** Bound on the clean-up after a signal: a second signal, or this, ends the process anyway. */
const INTERRUPT_CLEANUP_MS = 20_000;

/** Runs a CLI's main: its number is the exit code; a throw is a crash (exit 2, stack shown). */
export function runMain(main: () => Promise<number>): void {
  const interrupt = (signal: NodeJS.Signals): void => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write(`\n${signal}: stopping the servers and dropping the databases this run started\n`);
    setTimeout(() => process.exit(130), INTERRUPT_CLEANUP_MS).unref();
    void Promise.allSettled([...cleanups].map((c) => c())).then(() => process.exit(130));
  };
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);
  main().then(
    (code) => { process.exitCode = code; },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
      process.exitCode = 2;
    },
  );
}
