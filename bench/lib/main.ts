// How a bench (or the checker, or `npm run cluster`) runs as a program: whether a module is
// the one node was asked to run, so one file can be both a CLI and an importable module
// (paths compared after resolving symlinks); exit codes; clean-up on Ctrl-C or SIGTERM.
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseBenchDuration, UsageError } from './options.ts';

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

/**
 * Parses a CLI's options and runs it: --help prints the usage (exit 0), a UsageError prints
 * its message and the usage (exit 2); anything else thrown is a crash, for runMain.
 */
export async function withOptions<O>(usage: string, parse: () => O | 'help', main: (o: O) => Promise<number>): Promise<number> {
  let o: O | 'help';
  try {
    o = parse();
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n\n${usage}`);
    return 2;
  }
  if (o === 'help') {
    process.stdout.write(usage);
    return 0;
  }
  return main(o);
}

/** runMain for the fixed benches (core, batch, cluster), whose one option is `--duration S` (see parseBenchDuration). */
export function runBench(usage: string, defaultS: number, main: (durationS: number) => Promise<number>): void {
  runMain(() => withOptions(usage, () => parseBenchDuration(process.argv.slice(2), process.env.BENCH_SECONDS, defaultS), main));
}
