import { describe, it, expect } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/persistence/embedded.ts';

// Above 2^53: these only survive as strings (pg returns int8 as text by default).
const BIG = ['9007199254740993', '9223372036854775807', '-9223372036854775808'];

async function withPool<T>(db: EmbeddedPostgres, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString: db.connectionString, max: 1 });
  pool.on('error', () => undefined); // idle client killed by a server stop: not a test failure
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

describe('embedded postgres (PGlite over pglite-socket)', () => {
  it('serves pg over TCP, rolls back, and persists across restarts', { timeout: 20_000 }, async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'geopay-embedded-'));
    const dataDir = path.join(root, 'data'); // does not exist yet: must be created
    try {
      const first = await startEmbeddedPostgres({ dataDir });
      try {
        expect(first.connectionString).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres/);

        await withPool(first, async (pool) => {
          await pool.query(
            'CREATE TABLE ledger (id text PRIMARY KEY, amount bigint NOT NULL, meta jsonb)',
          );
          const ins = await pool.query(
            'INSERT INTO ledger (id, amount) SELECT * FROM unnest($1::text[], $2::bigint[])',
            [['a', 'b', 'c'], BIG],
          );
          expect(ins.rowCount).toBe(3);

          // ON CONFLICT DO NOTHING RETURNING: only the new row comes back.
          const upsert = await pool.query(
            'INSERT INTO ledger (id, amount, meta) VALUES ($1, $2, $3), ($4, $5, $6) ON CONFLICT DO NOTHING RETURNING id',
            ['a', '1', null, 'd', '42', { kind: 'fee', tags: ['x'] }],
          );
          expect(upsert.rows).toEqual([{ id: 'd' }]);

          // Transaction that rolls back leaves nothing behind.
          const client = await pool.connect();
          try {
            await client.query('BEGIN');
            const locked = await client.query(
              'SELECT id, amount FROM ledger WHERE id = $1 FOR SHARE',
              ['a'],
            );
            expect(locked.rows).toEqual([{ id: 'a', amount: BIG[0] }]);
            await client.query('INSERT INTO ledger (id, amount) VALUES ($1, $2)', ['rolled-back', BIG[1]]);
            await client.query('UPDATE ledger SET amount = 0 WHERE id = $1', ['b']);
            await client.query('ROLLBACK');
          } finally {
            client.release();
          }

          // Committed transaction.
          const tx = await pool.connect();
          try {
            await tx.query('BEGIN');
            await tx.query('INSERT INTO ledger (id, amount) VALUES ($1, $2)', ['e', '-1']);
            await tx.query('COMMIT');
          } finally {
            tx.release();
          }

          const count = await pool.query('SELECT count(*)::int AS n FROM ledger WHERE id = $1', [
            'rolled-back',
          ]);
          expect(count.rows[0].n).toBe(0);
          const b = await pool.query('SELECT amount FROM ledger WHERE id = $1', ['b']);
          expect(b.rows[0].amount).toBe(BIG[1]);
        });
      } finally {
        await first.close();
        await first.close(); // idempotent
      }

      const second = await startEmbeddedPostgres({ dataDir });
      try {
        await withPool(second, async (pool) => {
          const rows = await pool.query('SELECT id, amount, meta FROM ledger ORDER BY id');
          expect(rows.rows).toEqual([
            { id: 'a', amount: BIG[0], meta: null },
            { id: 'b', amount: BIG[1], meta: null },
            { id: 'c', amount: BIG[2], meta: null },
            { id: 'd', amount: '42', meta: { kind: 'fee', tags: ['x'] } },
            { id: 'e', amount: '-1', meta: null },
          ]);
        });

        // The PGlite backend is one session shared by every socket connection;
        // a new connection must still start with a fresh session (pg.Pool
        // reconnects after idleTimeoutMillis and re-prepares named statements).
        const pool = new pg.Pool({ connectionString: second.connectionString, max: 1, idleTimeoutMillis: 50 });
        try {
          const named = { name: 'ledger-count', text: 'SELECT count(*)::int AS n FROM ledger' };
          await pool.query("SET application_name = 'leaky'");
          expect((await pool.query(named)).rows).toEqual([{ n: 5 }]);
          await new Promise((r) => setTimeout(r, 300));
          expect(pool.totalCount).toBe(0); // idle client was closed
          expect((await pool.query(named)).rows).toEqual([{ n: 5 }]);
          const app = await pool.query("SELECT current_setting('application_name') AS a");
          expect(app.rows[0].a).not.toBe('leaky');
        } finally {
          await pool.end();
        }
      } finally {
        await second.close();
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
