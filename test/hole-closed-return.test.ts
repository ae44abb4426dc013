// Issue 9, point 10 (first half): money returned into an account that was closed while its
// transfer was in flight. A closed account can never send, so money landing there would be
// stranded; it is carried on, in the same commit as the return, to the tenant's suspense
// account of that region and currency, where the admin sees it and pays it out. Money stays
// conserved and visible throughout, across a restart, and the ledger checker passes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { check } from '../bench/checker.ts';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import type { AccountId, TenantId, TransferId } from '../src/domain/ids.ts';
import { makeTransferId, regionOf, uuidv7Hex } from '../src/domain/ids.ts';
import { randomBytes } from 'node:crypto';

let t: TestNode;
let key: string;
let tenantId: string;

beforeAll(async () => {
  // The relay is the test's to run; the first delivery of each leg is direct.
  t = await startTestNode('hole_closed_return', { relayIntervalMs: 600_000 });
  ({ key, id: tenantId } = await t.tenant('closed-return'));
});
afterAll(async () => { await t?.close(); });

const account = async (id: string) => (await t.call('GET', `/v1/accounts/${id}`, { key })).body as { balance: string; status: string };
const transferRow = async (id: string) => (await t.node.pool.query<{ state: string; refusal_code: string | null }>('SELECT state, refusal_code FROM transfers WHERE id = $1', [id])).rows[0];

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await t.node.relay.runOnce(0);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Nothing in flight, and every posting plus what is in flight sums to 0. */
async function ledgerTotal(): Promise<bigint> {
  const r = await t.node.pool.query<{ s: bigint | null; f: bigint | null }>(
    "SELECT (SELECT sum(amount)::bigint FROM journal) AS s, (SELECT sum(amount)::bigint FROM transfers WHERE state IN ('debited','refused')) AS f");
  return (r.rows[0]!.s ?? 0n) + (r.rows[0]!.f ?? 0n);
}

describe('a return into an account closed while its transfer was in flight', () => {
  it('lands in the tenant suspense account, which the admin sees and pays out', async () => {
    const [a, b, c] = [await t.account(key), await t.account(key), await t.account(key)];
    expect((await t.deposit(key, a, '50')).status).toBe(201);
    // b is closed: a transfer to it is refused at the destination and comes back to a.
    expect((await t.call('POST', `/v1/accounts/${b}/close`, { key })).status).toBe(200);

    // a sends everything to b and closes in the same breath: its mailbox takes the debit,
    // then the close (balance 0 by then), long before b's refusal sends the money back.
    const transferId: TransferId = makeTransferId(regionOf(a as AccountId), uuidv7Hex(Date.now(), randomBytes(10)));
    const [debit, close] = await Promise.all([
      t.node.registry.send(a as AccountId, {
        cmd: { type: 'Debit', transferId, amount: 50n, currency: 'USD' },
        // Claimed under a key as POST /v1/transfers does (the checker looks for it).
        idem: { tenantId, key: idem(), requestHash: 'hole-closed-return', resourceId: transferId, onOk: null },
        transfer: { destinationId: b as AccountId, kind: 'transfer', tenantId: tenantId as TenantId, metadata: null },
      }),
      t.node.registry.send(a as AccountId, { cmd: { type: 'Close' } }),
    ]);
    expect(debit.type === 'done' && debit.reply.ok, 'the debit is accepted').toBe(true);
    expect(close.type === 'done' && close.reply.ok, `the close is accepted after the debit: ${close.type === 'done' && !close.reply.ok ? close.reply.code : close.type}`).toBe(true);

    const returned = await waitFor('the transfer to return', async () => {
      const row = await transferRow(transferId);
      return row?.state === 'returned' ? row : undefined;
    });
    expect(returned.refusal_code).toBe('account_closed');

    // The closed account does not keep money it can never spend.
    const closed = await account(a);
    expect(closed.status).toBe('closed');
    expect(closed.balance, 'money returned into a closed account is stranded there').toBe('0');

    // The admin sees it in the tenant's suspense account of that region and currency.
    const listed = await waitFor('the suspense balance', async () => {
      const r = await t.call('GET', '/v1/suspense', { key: t.adminKey });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      const row = (r.body.data as { accountId: string; tenantId: string; currency: string; balance: string }[]).find((s) => s.tenantId === tenantId && s.currency === 'USD');
      return row?.balance === '50' ? row : undefined;
    });
    expect(listed).toMatchObject({ tenantId, currency: 'USD', region: 'local', balance: '50' });
    // A tenant key cannot use the suspense routes, nor reach the suspense account as its own.
    expect((await t.call('GET', '/v1/suspense', { key })).status).toBe(403);
    expect((await t.call('GET', `/v1/accounts/${listed.accountId}`, { key })).status).toBe(404);
    const steal = await t.call('POST', '/v1/transfers', { key, idem: idem(), body: { sourceAccountId: listed.accountId, destinationAccountId: c, amount: '50', currency: 'USD' } });
    expect(steal.status).toBe(404);

    // The way there is a transfer of its own, from the closed account, named in the statement.
    const carried = (await t.node.pool.query<{ id: string; kind: string; state: string; tenant_id: string; metadata: unknown }>(
      'SELECT id, kind, state, tenant_id, metadata FROM transfers WHERE source_id = $1 AND destination_id = $2', [a, listed.accountId])).rows;
    expect(carried).toHaveLength(1);
    expect(carried[0]).toMatchObject({ kind: 'suspense', state: 'settled', tenant_id: tenantId, metadata: { reason: 'account_closed', returnedTransferId: transferId } });

    // Across a restart every balance replays the same.
    await t.restart();
    expect(await account(a)).toMatchObject({ status: 'closed', balance: '0' });

    // The admin pays it out to another account of the tenant.
    const payout = await t.call('POST', `/v1/suspense/${listed.accountId}/payouts`, { key: t.adminKey, idem: idem(), body: { destinationAccountId: c } });
    expect(payout.status, JSON.stringify(payout.body)).toBe(201);
    expect(payout.body).toMatchObject({ kind: 'payout', sourceAccountId: listed.accountId, destinationAccountId: c, amount: '50', state: 'settled' });
    expect((await account(c)).balance).toBe('50');
    const after = await t.call('GET', '/v1/suspense', { key: t.adminKey });
    expect(after.body.data.find((s: { accountId: string }) => s.accountId === listed.accountId).balance).toBe('0');
    // More than is there is refused, and nothing moves.
    const more = await t.call('POST', `/v1/suspense/${listed.accountId}/payouts`, { key: t.adminKey, idem: idem(), body: { destinationAccountId: c, amount: '1' } });
    expect(more.status).toBe(422);
    expect(more.body.code).toBe('insufficient_funds');

    expect(await ledgerTotal()).toBe(0n);
    const checked = await check(t.node.pool, {});
    expect(checked.failures).toEqual([]);
    expect(checked.ok).toBe(true);
  }, 60_000);

  it('a payout answers 404 for an id that is not a suspense account, and needs the admin key', async () => {
    const a = await t.account(key);
    const notSuspense = await t.call('POST', `/v1/suspense/${a}/payouts`, { key: t.adminKey, idem: idem(), body: { destinationAccountId: a } });
    expect(notSuspense.status).toBe(404);
    expect(notSuspense.body.code).toBe('account_not_found');
    const tenantKey = await t.call('POST', `/v1/suspense/${a}/payouts`, { key, idem: idem(), body: { destinationAccountId: a } });
    expect(tenantKey.status).toBe(403);
  });
});
