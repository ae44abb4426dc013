// The short version of `npm run chaos` (issue 14): three faults of the matrix, kill -9 of a
// shard owner, two of three Redis masters down, a restart of a region's PostgreSQL, each under
// the open-loop load with replays, on the full local cluster (3 regions x 2 nodes, 3 Redis
// masters, a PostgreSQL server per region, a nats-server; all real, all this file's own). Each
// ends with the cross-database checker: 0 violations. Windows are measured and reported, not
// held to a time here (the machine is shared); what is asserted is behaviour: every write was
// decided, writes came back in every region after each heal, and nothing the run started is left.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SHORT } from '../scripts/chaos/matrix.ts';
import { chaosSummaryLine, formatChaosTable, writeChaosReport } from '../scripts/chaos/report.ts';
import { runChaos } from '../scripts/chaos/run.ts';
import type { ChaosReport } from '../scripts/chaos/types.ts';
import type { World } from '../scripts/chaos/world.ts';
import { childPids, isAlive } from './helpers/postgres-instances.ts';
import { requirePostgresServerBinaries, requireRedisServerBinary } from './helpers/prereq.ts';

const out = mkdtempSync(join(tmpdir(), 'geopay-chaos-test-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** Every process of the world: nodes, Redis masters, PostgreSQL servers and their backends, nats-server. */
function pidsOf(w: World): number[] {
  const { cluster, redis, pgInstances } = w.running;
  const pg = Object.values(pgInstances ?? {}).flatMap((i) => [i.pid, ...childPids(i.pid)]);
  const masters = redis.urls.map((_, i) => redis.pid(i)).filter((p): p is number => p !== undefined);
  const nats = [w.nats.pid(0)].filter((p): p is number => p !== undefined);
  return [...cluster.nodes.map((n) => n.pid), ...masters, ...pg, ...nats];
}

describe('npm run chaos, the short version', () => {
  it('kill -9 of an owner, Redis majority down, PostgreSQL restart: 0 violations, writes back after each heal', async () => {
    requireRedisServerBinary();
    requirePostgresServerBinaries();
    let pids: number[] = [];
    let world: World | undefined;
    const report: ChaosReport = await runChaos({
      only: SHORT, seconds: 16, seed: 14, rate: 20, env: {}, accountsPerRegion: 30, command: 'test/chaos.test.ts',
      onWorld: (w) => { world = w; },
      // The pids before each row's heal brought nodes back: collected again at the end.
      onRow: () => { pids = [...new Set([...pids, ...pidsOf(world!)])]; },
    });
    pids = [...new Set([...pids, ...pidsOf(world!)])];
    console.log(formatChaosTable(report));

    expect(report.rows.map((r) => r.fault)).toEqual(SHORT);
    for (const row of report.rows) {
      expect(row.failures, `${row.fault}: ${row.failures.join('\n')}`).toEqual([]);
      expect(row.violations, row.fault).toBe(0);
      expect(row.replays, `${row.fault}: replays were sent`).toBeGreaterThan(0);
      // Every write was decided within the client's deadline: none given up on.
      expect(row.acknowledged + row.refused, `${row.fault}: ${JSON.stringify(row)}`.slice(0, 400)).toBe(row.sent);
      expect(row.acknowledged, row.fault).toBeGreaterThan(row.sent * 0.9);
      // Writes were acknowledged in every region after the heal.
      for (const [region, buckets] of Object.entries(row.timeline)) {
        const after = buckets.filter((b) => b.t >= row.faultEndS).reduce((n, b) => n + b.ok, 0);
        expect(after, `${row.fault}: ${region} after the heal`).toBeGreaterThan(0);
      }
      expect(row.longestWindowMs).toBeLessThan(row.loadSeconds * 1000);
    }
    // The owner's death shows on its own accounts.
    expect(report.rows[0]!.affected?.windowMs).toBeGreaterThan(0);
    expect(chaosSummaryLine(report)).toMatch(/^chaos: 3 faults, 0 violations, longest window \d+ ms$/);

    const written = await writeChaosReport(out, report, { png: false });
    expect(JSON.parse(readFileSync(written.json, 'utf8')).totals).toEqual(report.totals);
    const html = readFileSync(written.html, 'utf8');
    for (const f of SHORT) expect(html).toContain(f);
    expect(html).not.toMatch(/<script|src=|href=/);

    // Nothing the run started is left running.
    expect(pids.length).toBeGreaterThan(10);
    expect(pids.filter(isAlive)).toEqual([]);
  }, 420_000);
});
