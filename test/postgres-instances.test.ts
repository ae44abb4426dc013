// The PostgreSQL instances of test/helpers/postgres-instances.ts, which the region-outage tests
// and `npm run cluster -- --separate-postgres` stand on: two real servers, separate clusters
// (not two databases of one), stopped and crashed by pid and brought back with their data, and
// nothing left behind, neither a process nor a folder.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive, startPostgresInstances, type PgInstance, type PgInstances } from './helpers/postgres-instances.ts';
import { MissingPrerequisite, requirePostgresServerBinaries } from './helpers/prereq.ts';

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const scalar = async <T>(url: string, sql: string): Promise<T> =>
  withClient(url, async (c) => (await c.query(sql)).rows[0]?.v as T);

/** The error code a fresh connection to `url` fails with; fails the test when it connects. */
async function connectFailure(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  } finally {
    await client.end().catch(() => undefined);
  }
  throw new Error(`${url} accepted a connection`);
}

const serverLog = (i: PgInstance): string => readFileSync(join(dirname(i.dataDir), 'postgres.log'), 'utf8');

describe('PostgreSQL instances of their own', () => {
  let servers: PgInstances;
  let a: PgInstance;
  let b: PgInstance;

  beforeAll(async () => {
    servers = await startPostgresInstances(2, { namePrefix: 'geopay-pgtest' });
    [a, b] = servers.instances as [PgInstance, PgInstance];
  });
  afterAll(async () => {
    await servers?.stopAll();
  });

  it('starts two servers that answer on different ports, with different system identifiers', async () => {
    expect(servers.instances).toHaveLength(2);
    expect(a.port).not.toBe(b.port);
    for (const i of [a, b]) {
      expect(i.url).toBe(`postgres://postgres@127.0.0.1:${i.port}/postgres`);
      expect(i.running).toBe(true);
      expect(await scalar<number>(i.url, 'SELECT 1 AS v')).toBe(1);
      expect(await scalar<number>(i.url, 'SELECT inet_server_port() AS v')).toBe(i.port);
      expect(await scalar<string>(i.url, `SELECT current_setting('data_directory') AS v`)).toBe(i.dataDir);
      expect(await scalar<string>(i.url, `SELECT current_setting('fsync') AS v`)).toBe('on');
    }
    const idA = await scalar<string>(a.url, 'SELECT system_identifier AS v FROM pg_control_system()');
    const idB = await scalar<string>(b.url, 'SELECT system_identifier AS v FROM pg_control_system()');
    expect(idA).toMatch(/^\d+$/);
    expect(idA).not.toBe(idB);
  });

  it('keeps a database created on one out of the other', async () => {
    await withClient(a.url, (c) => c.query('CREATE DATABASE geopay_only_on_a'));
    const count = (url: string) => scalar<string>(url, `SELECT count(*) AS v FROM pg_database WHERE datname = 'geopay_only_on_a'`);
    expect(await count(a.url)).toBe('1');
    expect(await count(b.url)).toBe('0');
  });

  it('stop() refuses connections to that server only, and start() brings it back with its data', async () => {
    await withClient(a.url, (c) => c.query(`CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1), (2)`));
    const oldPid = a.pid;
    await a.stop();
    expect(a.running).toBe(false);
    expect(isAlive(oldPid)).toBe(false);
    expect(await connectFailure(a.url)).toBe('ECONNREFUSED');
    expect(await scalar<number>(b.url, 'SELECT 1 AS v')).toBe(1);

    const port = a.port;
    await a.start();
    expect(a.running).toBe(true);
    expect(a.port).toBe(port);
    expect(a.pid).not.toBe(oldPid);
    expect(await scalar<string>(a.url, 'SELECT string_agg(id::text, \',\' ORDER BY id) AS v FROM kept')).toBe('1,2');
  });

  it('kill9() crashes the server; start() recovers every committed row and none of an open transaction', async () => {
    await withClient(a.url, (c) => c.query('CREATE TABLE ledger (id int PRIMARY KEY, amount bigint NOT NULL)'));
    await withClient(a.url, (c) => c.query('INSERT INTO ledger SELECT g, g * 100 FROM generate_series(1, 1000) g'));
    // Left open at the crash: recovery must drop it.
    const open = new pg.Client({ connectionString: a.url });
    open.on('error', () => undefined);
    await open.connect();
    await open.query('BEGIN');
    await open.query('INSERT INTO ledger VALUES (5000, 1)');
    const tree = a.processIds();
    expect(tree.length).toBeGreaterThan(1);

    await a.kill9();
    await open.end().catch(() => undefined);
    expect(a.running).toBe(false);
    expect(tree.filter(isAlive)).toEqual([]);
    expect(await connectFailure(a.url)).toBe('ECONNREFUSED');

    await a.start();
    expect(serverLog(a)).toMatch(/not properly shut down; automatic recovery in progress/);
    expect(await scalar<string>(a.url, 'SELECT count(*)::text || \'/\' || sum(amount)::text AS v FROM ledger')).toBe(`1000/${100n * 500n * 1001n}`);
    expect(await scalar<string>(a.url, 'SELECT count(*) AS v FROM ledger WHERE id = 5000')).toBe('0');
    expect(await scalar<string>(a.url, 'SELECT count(*) AS v FROM kept')).toBe('2');
  });

  it('stopAll() leaves no process of theirs and removes their folders', async () => {
    const pids = servers.instances.flatMap((i) => i.processIds());
    const folders = servers.instances.map((i) => dirname(i.dataDir));
    expect(pids.length).toBeGreaterThanOrEqual(4);
    // The postmasters: their children come and go on their own (an autovacuum worker ends).
    expect(servers.instances.map((i) => i.pid).every(isAlive)).toBe(true);
    expect(folders.every((f) => existsSync(f))).toBe(true);

    await servers.stopAll();
    expect(pids.filter(isAlive)).toEqual([]);
    expect(folders.filter((f) => existsSync(f))).toEqual([]);
    expect(servers.instances.every((i) => !i.running)).toBe(true);
  });
});

describe('requirePostgresServerBinaries', () => {
  it('names the missing binary and the package in one line', () => {
    let err: unknown;
    try {
      requirePostgresServerBinaries('/nonexistent/postgresql/15/bin');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MissingPrerequisite);
    const message = (err as Error).message;
    expect(message).toBe('PostgreSQL 15 initdb is missing (no executable /nonexistent/postgresql/15/bin/initdb); install it: apt-get install -y postgresql-15');
    expect((err as Error).stack).toBe(`MissingPrerequisite: ${message}`);
  });

  it('finds initdb and postgres of this machine', () => {
    expect(requirePostgresServerBinaries()).toBe('/usr/lib/postgresql/15/bin');
  });
});
