// One live status line while a phase runs (elapsed, sent, ok, errors, rate, p99), redrawn in
// place. Only on a terminal: in CI or when piped to a file, a line per tick would bury the
// summary, so nothing is drawn there.
import type { PhaseStats } from './stats.ts';
import { sumValues } from './stats.ts';

export interface Progress {
  /** Starts drawing for a phase; returns a function that stops and clears the line. */
  track(label: string, stats: PhaseStats, durationS: number): () => void;
  /** A message on its own line, above the live one. */
  note(message: string): void;
}

export function progress(stream: NodeJS.WriteStream = process.stdout): Progress {
  const live = stream.isTTY === true;
  let clear: (() => void) | undefined;
  return {
    track(label, stats, durationS) {
      if (!live) return () => undefined;
      const draw = (): void => {
        const c = stats.counts;
        const p99 = stats.recentP99Ms();
        const line = [
          `${label}`,
          `${Math.min(stats.elapsedS, durationS).toFixed(0)}/${durationS}s`,
          `sent ${c.sent}`,
          `ok ${c.ok}`,
          `rejected ${sumValues(c.rejected)}`,
          `errors ${sumValues(c.errors)}`,
          `${stats.recentRate()}/s`,
          `p99 ${p99 === null ? '-' : `${p99.toFixed(1)}ms`}`,
        ].join('  ');
        stream.write(`\r\x1b[2K${line.slice(0, (stream.columns || 120) - 1)}`);
      };
      const timer = setInterval(draw, 250);
      timer.unref();
      draw();
      const stop = (): void => {
        clearInterval(timer);
        stream.write('\r\x1b[2K');
        clear = undefined;
      };
      clear = stop;
      return stop;
    },
    note(message) {
      if (live && clear) stream.write('\r\x1b[2K');
      stream.write(`${message}\n`);
    },
  };
}
