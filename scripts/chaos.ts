// `npm run chaos`: the fault matrix over a local multi-region cluster (scripts/chaos/). Each
// fault under an open-loop load with replays, healed, everything in flight settled, then the
// cross-database checker; one row per fault, the table as JSON, HTML and PNG, and a last line
// `chaos: N faults, V violations, longest window W ms`. Exit 1 on any violation.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { isMain, runMain, withOptions } from '../bench/lib/main.ts';
import { parsePositive, parsePositiveInt, parseSeed, UsageError } from '../bench/lib/options.ts';
import { stamp } from '../bench/lib/table.ts';
import { FAULTS } from './chaos/matrix.ts';
import { chaosSummaryLine, formatChaosTable, writeChaosReport } from './chaos/report.ts';
import { runChaos, selectFaults, type ChaosOptions } from './chaos/run.ts';

const USAGE = `usage: npm run chaos -- [--only f1,f2] [--seconds S] [--seed N] [--rate R] [--out DIR]
  --only F      the faults to run, comma-separated (default: all), of:
                ${FAULTS.map((f) => f.id).join(', ')}
  --seconds S   seconds of load per fault (default 30)
  --seed N      the load's seed (default: random, printed)
  --rate R      open-loop writes per second (default 30)
  --out DIR     where chaos.json, chaos.html and chaos.png go (default chaos-results/<time>)
LEASE_TTL_MS and LOG_LEVEL reach the nodes; every other setting is the nodes' default.
`;

interface CliOptions extends ChaosOptions {
  out: string;
}

function parse(): CliOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        only: { type: 'string' }, seconds: { type: 'string' }, seed: { type: 'string' }, rate: { type: 'string' },
        out: { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  const only = values.only ? values.only.split(',').map((s) => s.trim()).filter(Boolean) : [];
  try {
    selectFaults(only);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const env: Record<string, string> = {};
  if (process.env.LEASE_TTL_MS) env.LEASE_TTL_MS = process.env.LEASE_TTL_MS;
  return {
    only,
    seconds: values.seconds ? parsePositiveInt(values.seconds, '--seconds') : 30,
    seed: parseSeed(values.seed),
    rate: values.rate ? parsePositive(values.rate, '--rate') : 30,
    out: values.out ?? join('chaos-results', stamp()),
    env,
    accountsPerRegion: 100,
    command: `npm run chaos -- ${process.argv.slice(2).join(' ')}`.trim(),
  };
}

async function main(o: CliOptions): Promise<number> {
  console.log(`chaos: seed ${o.seed}, ${o.seconds} s per fault at ${o.rate} writes/s`);
  const report = await runChaos({
    ...o,
    onProgress: (line) => console.log(`  ${line}`),
    onRow: (row) => console.log(`  ${row.fault}: ${row.acknowledged}/${row.sent} acknowledged, longest window ${row.longestWindowMs} ms (bound ${row.boundMs}), settled ${row.settleMs} ms after the heal, ${row.violations} violations${row.refused > 0 ? `; refused ${JSON.stringify(row.refusedCodes)}` : ""}; attempts not acknowledged ${JSON.stringify(row.attemptErrors)}`),
  });
  mkdirSync(o.out, { recursive: true });
  const written = await writeChaosReport(o.out, report);
  console.log('');
  console.log(formatChaosTable(report));
  console.log('');
  for (const row of report.rows) for (const f of row.failures) console.log(`  ${row.fault}: ${f}`);
  console.log(`results: ${written.json}\nreport:  ${written.html}${written.png ? `\n         ${written.png}` : ` (no PNG: ${written.pngError})`}`);
  console.log(chaosSummaryLine(report));
  return report.totals.violations === 0 ? 0 : 1;
}

if (isMain(import.meta.url)) runMain(() => withOptions(USAGE, parse, main));
