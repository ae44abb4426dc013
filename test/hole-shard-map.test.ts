// Issue 9, point 6: the shard map is pinned. The bucket count is stored in the database at
// its first start; a node configured with another SHARD_BUCKETS refuses to start (exit code
// 2, one line naming both values), since it would place accounts in other shards under other
// epochs: two writers for one account. Concurrent first starts agree: the first one wins.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { startServer } from './helpers/server-process.ts';

const projectRoot = fileURLToPath(new URL('..', import.meta.url));
const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
const dbs: TestDatabase[] = [];
const running = new Set<() => void>();

beforeAll(async () => {
  dbs.push(await createTestDatabase('hole_shard_map_a'), await createTestDatabase('hole_shard_map_b'));
});

afterAll(async () => {
  for (const stop of running) stop();
  await new Promise((r) => setTimeout(r, 500));
  await Promise.all(dbs.map((d) => d.drop()));
});

interface Run {
  /** The URL it listens on, or undefined when it exited first. */
  listening: Promise<string | undefined>;
  /** Exit code once the process and its pipes closed (stderr complete). */
  closed: Promise<number | null>;
  stderr(): string;
  stop(): void;
}

/** A geopay process whose refusal we can read whole (exit code and all of stderr). */
function run(databaseUrl: string, shardBuckets: number): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: projectRoot,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', DATABASE_URL: databaseUrl, ADMIN_API_KEY: adminKey, SHARD_BUCKETS: String(shardBuckets) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stop = () => child.kill('SIGKILL');
  running.add(stop);
  let out = '';
  let err = '';
  const closed = new Promise<number | null>((resolve) => child.once('close', (code) => { running.delete(stop); resolve(code); }));
  const listening = new Promise<string | undefined>((resolve) => {
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      const m = /geopay listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    void closed.then(() => resolve(undefined));
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { err += chunk; });
  return { listening, closed, stderr: () => err, stop };
}

async function pinned(databaseUrl: string): Promise<number[]> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  try {
    return (await c.query<{ shard_buckets: number }>('SELECT shard_buckets FROM cluster_settings')).rows.map((r) => r.shard_buckets);
  } finally {
    await c.end();
  }
}

const refusal = (stored: number, configured: number) => new RegExp(`^.*SHARD_BUCKETS=${configured}\\b.*\\b${stored}\\b.*$`, 'm');

describe('hole 6: the shard map is pinned in the database', () => {
  it('a node whose SHARD_BUCKETS disagrees with the first start refuses to start', async () => {
    const url = dbs[0]!.url;
    const first = await startServer({ databaseUrl: url, adminKey, env: { SHARD_BUCKETS: '64' } });
    await first.kill();

    const second = run(url, 32);
    expect(await second.listening, 'a node with SHARD_BUCKETS=32 started on a database of 64 buckets').toBeUndefined();
    expect(await second.closed).toBe(2);
    const lines = second.stderr().split('\n').filter((l) => l.includes('SHARD_BUCKETS'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(refusal(64, 32));
    expect(await pinned(url)).toEqual([64]);

    // The agreeing configuration still starts.
    const third = await startServer({ databaseUrl: url, adminKey, env: { SHARD_BUCKETS: '64' } });
    await third.kill();
  });

  it('two concurrent first starts agree: the first one wins, the other refuses', async () => {
    const url = dbs[1]!.url;
    const a = run(url, 64);
    const b = run(url, 32);
    const [ua, ub] = await Promise.all([a.listening, b.listening]);
    const started = [ua, ub].filter((u) => u !== undefined);
    expect(started, 'exactly one of two disagreeing first starts may run').toHaveLength(1);
    const [winner, loser, winnerBuckets, loserBuckets] = ua !== undefined ? [a, b, 64, 32] : [b, a, 32, 64];
    expect(await loser.closed).toBe(2);
    expect(loser.stderr()).toMatch(refusal(winnerBuckets, loserBuckets));
    expect(await pinned(url)).toEqual([winnerBuckets]);
    winner.stop();
    await winner.closed;
  });
});
