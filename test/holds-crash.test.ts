// Holds survive a crash: SIGKILL the server with holds outstanding, some of them past their
// deadline by the time it is back. After the restart the expired ones are released (never
// captured) and the others are still capturable.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from './helpers/db.ts';
import type { TestDatabase } from './helpers/db.ts';
import { api, startServer } from './helpers/server-process.ts';
import type { ServerProcess } from './helpers/server-process.ts';

let db: TestDatabase;
let server: ServerProcess | undefined;
const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;

beforeAll(async () => { db = await createTestDatabase('holds_crash'); });
afterAll(async () => {
  await server?.kill('SIGKILL').catch(() => undefined);
  await db?.drop();
});

describe('holds across a crash', () => {
  it('releases the holds that expired while the process was down and keeps the others capturable', async () => {
    server = await startServer({ databaseUrl: db.url, adminKey });
    const admin = api(server.url, adminKey);
    const tenant = await admin.post('/v1/tenants', { name: 'crash' });
    const k = await admin.post(`/v1/tenants/${tenant.body.id}/keys`);
    let c = api(server.url, k.body.key);
    const a = (await c.post('/v1/accounts', { currency: 'EUR' })).body.id as string;
    const b = (await c.post('/v1/accounts', { currency: 'EUR' })).body.id as string;
    expect((await c.post('/v1/deposits', { accountId: a, amount: '1000', currency: 'EUR' })).status).toBe(201);
    const hold = (amount: string, expiresInSeconds: number) =>
      c.post('/v1/holds', { sourceAccountId: a, destinationAccountId: b, amount, currency: 'EUR', expiresInSeconds });
    const short1 = await hold('100', 1);
    const short2 = await hold('150', 1);
    const long = await hold('200', 3600);
    for (const h of [short1, short2, long]) expect(h.status).toBe(201);
    expect((await c.get(`/v1/accounts/${a}`)).body).toMatchObject({ balance: '1000', held: '450' });

    await server.kill('SIGKILL');
    await sleep(1_500); // the short holds' deadline passes while nothing runs
    server = await startServer({ databaseUrl: db.url, adminKey });
    c = api(server.url, k.body.key);

    // The sweeper's first pass runs at start; give it a moment, bounded.
    const deadline = Date.now() + 10_000;
    let held = '';
    while (Date.now() < deadline) {
      held = (await c.get(`/v1/accounts/${a}`)).body.held;
      if (held === '200') break;
      await sleep(100);
    }
    expect(held).toBe('200');
    for (const h of [short1, short2]) {
      expect((await c.get(`/v1/holds/${h.body.id}`)).body).toMatchObject({ state: 'expired', captured: '0' });
      expect((await c.post(`/v1/holds/${h.body.id}/capture`, {})).body.code).toBe('hold_not_active');
    }
    const cap = await c.post(`/v1/holds/${long.body.id}/capture`, { amount: '120' });
    expect(cap.status).toBe(201);
    expect(cap.body).toMatchObject({ kind: 'capture', amount: '120', state: 'settled' });
    expect((await c.get(`/v1/accounts/${a}`)).body).toMatchObject({ balance: '880', held: '0' });
    expect((await c.get(`/v1/accounts/${b}`)).body).toMatchObject({ balance: '120' });
  });
});
