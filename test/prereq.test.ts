// The prerequisite checks of test/helpers/prereq.ts: what is missing is reported as one line
// (message and stack alike) naming it and the command that installs or starts it; what is there
// passes. Servers that are "down" are closed ports on the loopback; a password-demanding
// PostgreSQL is a socket that answers the startup message with the server's 28P01 error.
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MissingPrerequisite, requireBinary, requireChromium, requirePostgres, requireRedis,
  installChromiumCommand, startPostgresCommand, startRedisCommand,
} from './helpers/prereq.ts';

/** The error `fn` throws or rejects with; fails the test when there is none. */
async function thrown(fn: () => unknown): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a MissingPrerequisite, nothing was thrown');
}

/** A missing prerequisite as the tests report it: that class, and one line whatever vitest prints. */
function expectOneLine(err: Error, message: string | RegExp): void {
  expect(err).toBeInstanceOf(MissingPrerequisite);
  if (typeof message === 'string') expect(err.message).toBe(message);
  else expect(err.message).toMatch(message);
  expect(err.message).not.toContain('\n');
  expect(err.stack).toBe(`MissingPrerequisite: ${err.message}`);
}

/** A port on 127.0.0.1 that nothing listens on (bound, then closed again). */
async function closedPort(): Promise<number> {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as { port: number };
  srv.close();
  await once(srv, 'close');
  return port;
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'geopay-prereq-test-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('requireBinary', () => {
  it('names a missing absolute path and its install command in one line', async () => {
    const path = join(dir, 'no-such-chromium');
    expectOneLine(await thrown(() => requireBinary('chromium', path, installChromiumCommand)),
      `chromium is missing (no executable ${path}); install it: apt-get install -y chromium`);
    expectOneLine(await thrown(() => requireChromium(path)),
      `chromium is missing (no executable ${path}); install it: apt-get install -y chromium`);
  });

  it('looks a bare name up on PATH, as spawn() does', async () => {
    const bin = join(dir, 'bin');
    await mkdir(bin);
    await writeFile(join(bin, 'geopay-fake-tool'), '#!/bin/sh\n');
    await chmod(join(bin, 'geopay-fake-tool'), 0o755);
    const path = process.env.PATH;
    try {
      process.env.PATH = `/nonexistent-dir:${bin}`;
      expect(requireBinary('fake', 'geopay-fake-tool', 'apt-get install -y fake')).toBe(join(bin, 'geopay-fake-tool'));
      expectOneLine(await thrown(() => requireBinary('redis-server', 'redis-server', 'apt-get install -y redis-server')),
        'redis-server is missing (no redis-server on PATH); install it: apt-get install -y redis-server');
    } finally {
      process.env.PATH = path;
    }
  });

  it('refuses a file that is there but not executable, and passes one that is', async () => {
    const file = join(dir, 'not-executable');
    await writeFile(file, '#!/bin/sh\n');
    await chmod(file, 0o644);
    expectOneLine(await thrown(() => requireBinary('thing', file, 'apt-get install -y thing')),
      `thing is missing (no executable ${file}); install it: apt-get install -y thing`);
    expect(requireBinary('node', process.execPath, 'unused')).toBe(process.execPath);
  });
});

describe('requirePostgres', () => {
  it('says how to start PostgreSQL (or install it) when nothing answers on the port', async () => {
    const port = await closedPort();
    const err = await thrown(() => requirePostgres(`postgres://postgres@127.0.0.1:${port}/postgres`));
    const started = `PostgreSQL is not running on 127.0.0.1:${port} (ECONNREFUSED); start it: ${startPostgresCommand}`;
    // Which of the two depends on this machine: installed here, it only needs starting.
    if (err.message.startsWith('PostgreSQL is not running')) expectOneLine(err, started);
    else expectOneLine(err, new RegExp(`^PostgreSQL 15 is not installed .* on 127\\.0\\.0\\.1:${port}; install it: apt-get install -y postgresql-15, then start it: pg_ctlcluster `));
  });

  describe('against a server that wants a password', () => {
    let server: Server;
    let port: number;
    beforeAll(async () => {
      // What PostgreSQL sends a client pg_hba.conf does not trust and that brings no password.
      const fields = 'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "postgres"\0\0';
      const body = Buffer.from(fields, 'utf8');
      const reply = Buffer.concat([Buffer.from('E'), Buffer.alloc(4), body]);
      reply.writeInt32BE(4 + body.length, 1);
      server = createServer((socket) => socket.once('data', () => socket.end(reply)));
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      port = (server.address() as { port: number }).port;
    });
    afterAll(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

    it('asks for trust auth, not for a start', async () => {
      expectOneLine(await thrown(() => requirePostgres(`postgres://postgres@127.0.0.1:${port}/postgres`)),
        `PostgreSQL on 127.0.0.1:${port} refuses user postgres without a password (28P01); the tests need trust auth: `
        + 'set the 127.0.0.1/32 line of /etc/postgresql/15/main/pg_hba.conf to trust, then pg_ctlcluster --skip-systemctl-redirect 15 main reload');
    });
  });

  it('passes for the PostgreSQL the tests use', async () => {
    await requirePostgres(process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  });
});

describe('requireRedis', () => {
  it('says how to start Redis when nothing answers on the port', async () => {
    const port = await closedPort();
    const err = await thrown(() => requireRedis(`redis://127.0.0.1:${port}`));
    if (err.message.startsWith('Redis is not running')) {
      expectOneLine(err, `Redis is not running on 127.0.0.1:${port} (ECONNREFUSED); start it: ${startRedisCommand(port)}`);
    } else {
      expectOneLine(err, `Redis is not installed (no redis-server on PATH) and nothing answers on 127.0.0.1:${port}; install it: apt-get install -y redis-server, then start it: ${startRedisCommand(port)}`);
    }
  });

  it('passes for the Redis the tests use', async () => {
    await requireRedis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
  });
});
