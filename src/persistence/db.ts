// The pg pool and the migrations applied at start. int8 comes back as bigint (never as a
// string, never as a float), and every connection carries a statement timeout.
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Logger } from 'pino';

pg.types.setTypeParser(pg.types.builtins.INT8, (v: string) => BigInt(v));

export type Pool = pg.Pool;
export type Client = pg.PoolClient;

/**
 * How a pool's statements are planned. `custom`: each execution of a prepared statement is
 * planned with its own parameters (every pool but the writer's). `generic`: the group-commit
 * writer's pool, where only the commit statements run; a generic plan skips the planning
 * (0.5 of the 1.3 ms PostgreSQL spent per commit, docs/tradeoffs.md), and seq scans are off so
 * that a plan made while a table is empty still reaches its rows through their indexes.
 */
export type Planning = 'custom' | 'generic';

const PLANNING: Record<Planning, string> = {
  custom: '-c plan_cache_mode=force_custom_plan',
  generic: '-c plan_cache_mode=force_generic_plan -c enable_seqscan=off',
};

export function createPool(opts: { connectionString: string; max: number; statementTimeoutMs: number; logger: Logger; planning?: Planning }): pg.Pool {
  const pool = new pg.Pool({
    connectionString: opts.connectionString,
    max: opts.max,
    statement_timeout: opts.statementTimeoutMs,
    options: PLANNING[opts.planning ?? 'custom'],
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client that errors (server restart) must not crash the process.
  pool.on('error', (err) => opts.logger.warn({ err }, 'idle pg client failed'));
  return pool;
}

const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));

/** Applies the versioned migrations not yet applied, each in its own transaction, under a lock. */
export async function migrate(pool: pg.Pool, logger: Logger): Promise<void> {
  const files = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{3}_.*\.sql$/.test(f)).sort();
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    // Nodes starting together on a fresh database: the lock comes first, even before the
    // bookkeeping table exists (a racing CREATE TABLE IF NOT EXISTS can still collide).
    await client.query('SELECT pg_advisory_xact_lock(7243901)');
    await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
    const { rows } = await client.query<{ version: number }>('SELECT version FROM schema_migrations');
    const applied = new Set(rows.map((r) => r.version));
    for (const f of files) {
      const version = Number(f.slice(0, 3));
      if (applied.has(version)) continue;
      await client.query(readFileSync(MIGRATIONS_DIR + f, 'utf8'));
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [version, f]);
      logger.info({ version, name: f }, 'migration applied');
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
