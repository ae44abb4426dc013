// Issue 9, point 8: an idempotent retry that arrives after its key expired (IDEMPOTENCY_RETENTION_MS)
// must find the transfer or hold its first attempt made, never make a second one; and a key
// whose transfer is still in flight is not expired at all. Real PostgreSQL, in-process nodes
// with a one-second retention and a cleanup every 100 ms.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { waitFor } from './helpers/cluster.ts';

const RETENTION_MS = 1_000;
const CLEANUP_MS = 100;

let t: TestNode;
let key: string;

beforeAll(async () => {
  t = await startTestNode('hole_expired_key', { idempotencyRetentionMs: RETENTION_MS, idempotencyCleanupMs: CLEANUP_MS });
  key = (await t.tenant('late-retries')).key;
});
afterAll(async () => { await t?.close(); });

async function q1(node: TestNode, sql: string, params: unknown[] = []): Promise<string> {
  const { rows } = await node.node.pool.query<Record<string, unknown>>(sql, params);
  return String(Object.values(rows[0]!)[0]);
}

const keyRows = (node: TestNode, k: string) => q1(node, 'SELECT count(*) FROM idempotency_keys WHERE key = $1', [k]);

async function balanceOf(node: TestNode, k: string, id: string): Promise<{ balance: string; held: string }> {
  const r = await node.call('GET', `/v1/accounts/${id}`, { key: k });
  expect(r.status).toBe(200);
  return { balance: r.body.balance, held: r.body.held };
}

/** Waits until the cleanup has deleted the key, and at least 2 s have passed since `since`. */
async function keyExpired(node: TestNode, k: string, since: number): Promise<void> {
  await waitFor(`key ${k} to be deleted by the cleanup`, 20_000, async () => ((await keyRows(node, k)) === '0' ? true : undefined));
  const left = since + 2_000 - Date.now();
  if (left > 0) await sleep(left);
}

async function funded(amount: string): Promise<string> {
  const id = await t.account(key, 'USD');
  if (amount !== '0') expect((await t.deposit(key, id, amount)).status).toBe(201);
  return id;
}

describe('a retry after the key expired', () => {
  it('a transfer is applied once: the retry answers the transfer the first attempt made', async () => {
    const src = await funded('1000');
    const dst = await funded('0');
    const k = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '100', currency: 'USD' };
    const first = await t.call('POST', '/v1/transfers', { key, idem: k, body });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    await keyExpired(t, k, Date.now());

    const again = await t.call('POST', '/v1/transfers', { key, idem: k, body });
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    expect(again.body.id, 'the retry answers the first transfer, not a new one').toBe(first.body.id);
    expect(await q1(t, 'SELECT count(*) FROM transfers WHERE source_id = $1', [src]), 'transfer rows from the source').toBe('1');
    expect(await q1(t, "SELECT count(*) FROM journal WHERE account_id = $1 AND kind = 'debit'", [src])).toBe('1');
    expect((await balanceOf(t, key, src)).balance).toBe('900');
    expect((await balanceOf(t, key, dst)).balance).toBe('100');
  });

  it('even when the source could no longer pay for it: the retry answers the transfer, not insufficient_funds', async () => {
    const src = await funded('1000');
    const dst = await funded('0');
    const k = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '600', currency: 'USD' };
    const first = await t.call('POST', '/v1/transfers', { key, idem: k, body });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    await keyExpired(t, k, Date.now());

    const again = await t.call('POST', '/v1/transfers', { key, idem: k, body });
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    expect(again.body.id).toBe(first.body.id);
    expect(await q1(t, 'SELECT count(*) FROM transfers WHERE source_id = $1', [src])).toBe('1');
    expect((await balanceOf(t, key, src)).balance).toBe('400');
    expect((await balanceOf(t, key, dst)).balance).toBe('600');
  });

  it('a deposit and a refund are applied once', async () => {
    const acc = await funded('0');
    const kDep = idem();
    const dep = await t.call('POST', '/v1/deposits', { key, idem: kDep, body: { accountId: acc, amount: '50', currency: 'USD' } });
    expect(dep.status).toBe(201);
    const kRef = idem();
    const ref = await t.call('POST', `/v1/transfers/${dep.body.id}/refunds`, { key, idem: kRef, body: { amount: '20' } });
    expect(ref.status, JSON.stringify(ref.body)).toBe(201);
    const since = Date.now();
    await keyExpired(t, kDep, since);
    await keyExpired(t, kRef, since);

    const dep2 = await t.call('POST', '/v1/deposits', { key, idem: kDep, body: { accountId: acc, amount: '50', currency: 'USD' } });
    const ref2 = await t.call('POST', `/v1/transfers/${dep.body.id}/refunds`, { key, idem: kRef, body: { amount: '20' } });
    expect([dep2.status, ref2.status], JSON.stringify([dep2.body, ref2.body])).toEqual([201, 201]);
    expect([dep2.body.id, ref2.body.id]).toEqual([dep.body.id, ref.body.id]);
    expect(await q1(t, 'SELECT count(*) FROM transfers WHERE destination_id = $1', [acc]), 'deposits into the account').toBe('1');
    expect(await q1(t, 'SELECT count(*) FROM transfers WHERE refund_of = $1', [dep.body.id]), 'refunds of the deposit').toBe('1');
    expect((await balanceOf(t, key, acc)).balance).toBe('30');
  });

  it('a hold is placed once', async () => {
    const src = await funded('1000');
    const dst = await funded('0');
    const k = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '70', currency: 'USD', expiresInSeconds: 600 };
    const first = await t.call('POST', '/v1/holds', { key, idem: k, body });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    await keyExpired(t, k, Date.now());

    const again = await t.call('POST', '/v1/holds', { key, idem: k, body });
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    expect(again.body.id).toBe(first.body.id);
    expect(await q1(t, 'SELECT count(*) FROM holds WHERE source_id = $1', [src]), 'hold rows on the source').toBe('1');
    expect(await balanceOf(t, key, src)).toEqual({ balance: '1000', held: '70' });
  });
});

describe('a key whose transfer is still in flight', () => {
  let slow: TestNode | undefined;
  afterAll(async () => { await slow?.close(); });

  it('is not expired until the transfer is terminal', async () => {
    // Every commit waits 3 s, so a deposit answered 202 (TRANSFER_WAIT_MS=0) stays debited for
    // about 3 s after its key was stored: well past the one-second retention.
    slow = await startTestNode('hole_expired_key_inflight', {
      idempotencyRetentionMs: RETENTION_MS, idempotencyCleanupMs: CLEANUP_MS, transferWaitMs: 0, faultCommitDelayMs: 3_000,
    });
    const s = slow;
    const tenantKey = (await s.tenant('in-flight')).key;
    const acc = await s.account(tenantKey, 'USD');
    const k = idem();
    const first = await s.call('POST', '/v1/deposits', { key: tenantKey, idem: k, body: { accountId: acc, amount: '25', currency: 'USD' } });
    expect(first.status, JSON.stringify(first.body)).toBe(202);
    const id = first.body.id as string;

    const samples: { state: string; keys: number; ageMs: number }[] = [];
    for (;;) {
      const { rows } = await s.node.pool.query<{ state: string; keys: string; age_ms: number | null }>(
        `SELECT t.state, (SELECT count(*) FROM idempotency_keys WHERE key = $2) AS keys,
                (SELECT extract(epoch FROM now() - created_at) * 1000 FROM idempotency_keys WHERE key = $2)::float8 AS age_ms
         FROM transfers t WHERE t.id = $1`, [id, k]);
      const r = rows[0]!;
      samples.push({ state: r.state, keys: Number(r.keys), ageMs: r.age_ms ?? -1 });
      if (r.state !== 'debited') break;
      await sleep(50);
    }
    const inFlight = samples.filter((x) => x.state === 'debited');
    expect(inFlight.filter((x) => x.keys === 0), 'samples where the key was gone while its transfer was debited').toEqual([]);
    // The check saw the key past its retention (and several cleanups) while the transfer was in flight.
    expect(Math.max(...inFlight.map((x) => x.ageMs)), JSON.stringify(samples)).toBeGreaterThan(RETENTION_MS + 3 * CLEANUP_MS);

    // Once terminal, the key expires like any other.
    await waitFor('the settled deposit\'s key to expire', 20_000, async () => ((await keyRows(s, k)) === '0' ? true : undefined));
    expect((await balanceOf(s, tenantKey, acc)).balance).toBe('25');
  }, 60_000);
});
