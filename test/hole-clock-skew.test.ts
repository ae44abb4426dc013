// Issue 9, point 7: one clock decides hold expiry and the relay's timing, the database's. A node
// whose clock runs 30 s ahead (FAULT_CLOCK_OFFSET_MS, test only) stamps its holds' deadlines
// and its transfers with that clock; it must still never release a hold before its expiresAt
// as the database sees time, and must not wait 30 s longer to re-deliver a lost credit.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { waitFor } from './helpers/cluster.ts';
import { api, startServer } from './helpers/server-process.ts';
import type { Api, ServerProcess } from './helpers/server-process.ts';

const SKEW_MS = 30_000;
const fast = { FAULT_CLOCK_OFFSET_MS: String(SKEW_MS), RELAY_INTERVAL_MS: '200', RELAY_MIN_AGE_MS: '1000' };
const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;

let db: TestDatabase;
let check: pg.Client;
let server: ServerProcess | undefined;
let key: string;
let a: string;
let b: string;
let skewed: { id: string; expiresAt: string };

const start = async (env: Record<string, string>): Promise<Api> => {
  server = await startServer({ databaseUrl: db.url, adminKey, env });
  return api(server.url, key);
};
const stateOf = async (table: 'holds' | 'transfers', id: string): Promise<string | undefined> =>
  (await check.query<{ state: string }>(`SELECT state FROM ${table} WHERE id = $1`, [id])).rows[0]?.state;

beforeAll(async () => {
  db = await createTestDatabase('hole_clock_skew');
  check = new pg.Client({ connectionString: db.url });
  await check.connect();
});
afterAll(async () => {
  await server?.kill('SIGKILL').catch(() => undefined);
  await check?.end();
  await db?.drop();
});

describe.sequential('a node whose clock runs 30 s ahead', () => {
  it('does not release a hold before its expiresAt, while it releases one that is due', async () => {
    // A node with a true clock sets up and places a control hold due 3 s later, then stops.
    server = await startServer({ databaseUrl: db.url, adminKey, env: { RELAY_INTERVAL_MS: '200' } });
    const admin = api(server.url, adminKey);
    const tenant = await admin.post('/v1/tenants', { name: 'skew' });
    key = (await admin.post(`/v1/tenants/${tenant.body.id}/keys`)).body.key as string;
    let c = api(server.url, key);
    a = (await c.post('/v1/accounts', { currency: 'EUR' })).body.id as string;
    b = (await c.post('/v1/accounts', { currency: 'EUR' })).body.id as string;
    expect((await c.post('/v1/deposits', { accountId: a, amount: '1000', currency: 'EUR' })).status).toBe(201);
    const control = await c.post('/v1/holds', { sourceAccountId: a, destinationAccountId: b, amount: '50', currency: 'EUR', expiresInSeconds: 3 });
    expect(control.status).toBe(201);
    await server.kill('SIGTERM');

    c = await start(fast);
    const h = await c.post('/v1/holds', { sourceAccountId: a, destinationAccountId: b, amount: '60', currency: 'EUR', expiresInSeconds: 1 });
    expect(h.status).toBe(201);
    skewed = { id: h.body.id as string, expiresAt: h.body.expiresAt as string };
    // The promise the client holds: about 31 s from now as the database sees time.
    const ahead = await check.query<{ s: number }>('SELECT extract(epoch FROM $1::timestamptz - now())::float8 AS s', [skewed.expiresAt]);
    expect(ahead.rows[0]!.s).toBeGreaterThan(20);

    // The sweeper of the skewed node runs: the control hold, due by the database's clock, goes.
    await waitFor('the control hold to be expired', 15_000, async () => ((await stateOf('holds', control.body.id)) === 'expired' ? true : undefined), 100);
    await sleep(2_000); // ten more sweeper passes, each one past the skewed node's own view of the deadline
    expect(await stateOf('holds', skewed.id), 'a hold released before its expiresAt').toBe('held');
    expect((await c.get(`/v1/accounts/${a}`)).body).toMatchObject({ balance: '1000', held: '60' });
  }, 60_000);

  it('does not delay recovery: a credit a kill -9 interrupted is re-delivered within seconds, not 30 s late', async () => {
    await server!.kill('SIGTERM');
    // Commits wait 1.5 s after deciding: the debit commits, then the credit waits; kill -9 there.
    let c = await start({ ...fast, FAULT_COMMIT_DELAY_MS: '1500' });
    void c.post('/v1/transfers', { sourceAccountId: a, destinationAccountId: b, amount: '5', currency: 'EUR' }).catch(() => undefined);
    const id = await waitFor('the debit', 15_000, async () =>
      (await check.query<{ id: string }>("SELECT id FROM transfers WHERE source_id = $1 AND state = 'debited'", [a])).rows[0]?.id, 25);
    await server!.kill('SIGKILL');
    expect(await stateOf('transfers', id)).toBe('debited');

    c = await start(fast);
    // RELAY_MIN_AGE_MS is 1 s; a relay misled by the skewed stamp would wait 31 s from the debit.
    await waitFor(`transfer ${id} to be settled by the relay`, 10_000, async () => ((await stateOf('transfers', id)) === 'settled' ? true : undefined), 100);
    const credits = await check.query<{ n: string }>("SELECT count(*) AS n FROM journal WHERE transfer_id = $1 AND kind = 'credit'", [id]);
    expect(credits.rows[0]!.n).toBe('1');
    expect((await c.get(`/v1/accounts/${b}`)).body.balance).toBe('5');
  }, 60_000);

  it('releases the hold once the database\'s clock has reached its expiresAt', async () => {
    await waitFor('the skewed hold to be expired', 45_000, async () => ((await stateOf('holds', skewed.id)) === 'expired' ? true : undefined), 200);
    const when = await check.query<{ late: boolean }>('SELECT clock_timestamp() >= $1::timestamptz AS late', [skewed.expiresAt]);
    expect(when.rows[0]!.late, 'released before its expiresAt').toBe(true);
    expect((await api(server!.url, key).get(`/v1/accounts/${a}`)).body).toMatchObject({ balance: '995', held: '0' });
  }, 60_000);
});
