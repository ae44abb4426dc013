// Idempotency-Key semantics end to end: a replay (sequential, 50 concurrent, or after a node
// restart) answers the very same status and bytes and applies the operation once; a key reused
// with a different request is refused (422 idempotency_key_reused) without writing anything; a
// remembered business rejection stays remembered; keys are scoped to their tenant.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

let t: TestNode;
let A: { id: string; key: string };
let B: { id: string; key: string };

beforeAll(async () => {
  t = await startTestNode('idempotency');
  A = await t.tenant('tenant-a');
  B = await t.tenant('tenant-b');
});
afterAll(async () => { await t?.close(); });

interface Raw { status: number; text: string; type: string; body: any }

/** The answer exactly as sent on the wire (the helper's `call` parses it; replays are compared byte for byte). */
async function raw(method: string, url: string, key: string, idemKey: string | undefined, body?: unknown): Promise<Raw> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` };
  if (idemKey !== undefined) headers['idempotency-key'] = idemKey;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await t.node.app.inject({ method: method as 'POST', url, headers, ...(body !== undefined ? { payload: JSON.stringify(body) } : {}) });
  let parsed: unknown;
  try { parsed = JSON.parse(res.body); } catch { parsed = undefined; }
  return { status: res.statusCode, text: res.body, type: String(res.headers['content-type'] ?? ''), body: parsed };
}

async function q1(sql: string, params: unknown[] = []): Promise<string> {
  const { rows } = await t.node.pool.query<Record<string, unknown>>(sql, params);
  return String(Object.values(rows[0]!)[0]);
}

async function counts(): Promise<Record<string, string>> {
  return {
    journal: await q1('SELECT count(*) FROM journal'),
    transfers: await q1('SELECT count(*) FROM transfers'),
    accounts: await q1('SELECT count(*) FROM accounts'),
    idempotency_keys: await q1('SELECT count(*) FROM idempotency_keys'),
  };
}

async function balance(key: string, id: string): Promise<string> {
  const r = await t.call('GET', `/v1/accounts/${id}`, { key });
  expect(r.status).toBe(200);
  return r.body.balance;
}

/** Debit postings of one transfer in the journal (the database allows one; the test wants one). */
const debits = (transferId: string) => q1("SELECT count(*) FROM journal WHERE transfer_id = $1 AND kind = 'debit'", [transferId]);
const credits = (transferId: string) => q1("SELECT count(*) FROM journal WHERE transfer_id = $1 AND kind = 'credit'", [transferId]);
const transferRows = (sourceId: string) => q1('SELECT count(*) FROM transfers WHERE source_id = $1', [sourceId]);

function expectProblem(r: Raw, status: number, code: string): void {
  expect(r.status, r.text).toBe(status);
  expect(r.type).toMatch(/^application\/problem\+json/);
  expect(r.body).toMatchObject({ status, code, type: `https://geopay.dev/errors/${code}` });
}

async function funded(key: string, amount: string, currency = 'USD'): Promise<string> {
  const id = await t.account(key, currency);
  if (amount !== '0') expect((await t.deposit(key, id, amount, currency)).status).toBe(201);
  return id;
}

describe('transfers', () => {
  it('same key and same body: the same status and bytes, applied once', async () => {
    const src = await funded(A.key, '1000');
    const dst = await funded(A.key, '0');
    const k = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '100', currency: 'USD', metadata: { ref: 'inv-1' } };
    const first = await raw('POST', '/v1/transfers', A.key, k, body);
    expect(first.status, first.text).toBe(201);
    expect(first.body).toMatchObject({ state: 'settled', amount: '100', sourceAccountId: src, destinationAccountId: dst });
    const id = first.body.id as string;

    for (let i = 0; i < 3; i++) {
      const again = await raw('POST', '/v1/transfers', A.key, k, body);
      expect(again.status).toBe(first.status);
      expect(again.body).toEqual(first.body);
      expect(again.text).toBe(first.text);
    }
    expect(await debits(id)).toBe('1');
    expect(await credits(id)).toBe('1');
    expect(await transferRows(src)).toBe('1');
    expect(await balance(A.key, src)).toBe('900');
    expect(await balance(A.key, dst)).toBe('100');
    // The transfer read back is what the POST answered.
    const read = await t.call('GET', `/v1/transfers/${id}`, { key: A.key });
    expect(read.body).toEqual(first.body);
  });

  it('a replay is byte-identical to the first answer even when the metadata keys are not in jsonb order', async () => {
    const src = await funded(A.key, '1000');
    const dst = await funded(A.key, '0');
    const k = idem();
    // PostgreSQL's jsonb sorts keys (shorter first): the replay must not come back reordered.
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '100', currency: 'USD', metadata: { order: 'ord-7', a: 1, nested: { z: true, b: [1, 'two'] } } };
    const first = await raw('POST', '/v1/transfers', A.key, k, body);
    expect(first.status, first.text).toBe(201);
    const again = await raw('POST', '/v1/transfers', A.key, k, body);
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    expect(again.text, 'the replay is byte-identical to the first answer').toBe(first.text);
    expect(await debits(first.body.id)).toBe('1');
    expect(await balance(A.key, src)).toBe('900');
  });

  it('50 concurrent duplicates: all 50 get the same status and byte-identical body; one transfer, one debit', async () => {
    const src = await funded(A.key, '1000');
    const dst = await funded(A.key, '0');
    const before = await counts();
    const k = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '7', currency: 'USD' };
    const all = await Promise.all(Array.from({ length: 50 }, () => raw('POST', '/v1/transfers', A.key, k, body)));
    const statuses = new Set(all.map((r) => r.status));
    const texts = new Set(all.map((r) => r.text));
    expect([...statuses], all[0]!.text).toEqual([201]);
    expect(texts.size, [...texts].join('\n')).toBe(1);
    const id = all[0]!.body.id as string;
    expect(await transferRows(src)).toBe('1');
    expect(await debits(id)).toBe('1');
    expect(await credits(id)).toBe('1');
    expect(await balance(A.key, src)).toBe('993');
    expect(await balance(A.key, dst)).toBe('7');
    const after = await counts();
    // One transfer: its debit and credit postings, its row, its key.
    expect(Number(after.transfers) - Number(before.transfers)).toBe(1);
    expect(Number(after.journal) - Number(before.journal)).toBe(2);
    expect(Number(after.idempotency_keys) - Number(before.idempotency_keys)).toBe(1);
    // And once everything is quiet, a 51st gets the same bytes again.
    const late = await raw('POST', '/v1/transfers', A.key, k, body);
    expect(late.status).toBe(201);
    expect(late.text).toBe(all[0]!.text);
  });

  it('50 concurrent requests with one key and two different bodies: exactly one body is applied, the other is refused as reused', async () => {
    const src = await funded(A.key, '1000');
    const dst = await funded(A.key, '0');
    const k = idem();
    const bodyOf = (amount: string) => ({ sourceAccountId: src, destinationAccountId: dst, amount, currency: 'USD' });
    const all = await Promise.all(Array.from({ length: 50 }, (_, i) => raw('POST', '/v1/transfers', A.key, k, bodyOf(i % 2 === 0 ? '11' : '13'))));
    expect(all.filter((r) => r.status >= 500).map((r) => r.text)).toEqual([]);
    const ok = all.filter((r) => r.status === 201);
    const reused = all.filter((r) => r.status === 422);
    expect(ok.length + reused.length, all.map((r) => `${r.status} ${r.text}`).join('\n')).toBe(50);
    for (const r of reused) expectProblem(r, 422, 'idempotency_key_reused');
    expect(ok.length).toBe(25);
    expect(new Set(ok.map((r) => r.text)).size).toBe(1);
    const applied = ok[0]!.body.amount as string;
    expect(await transferRows(src)).toBe('1');
    expect(await balance(A.key, src)).toBe(String(1000 - Number(applied)));
    expect(await balance(A.key, dst)).toBe(applied);
  });

  it('same key, different request: 422 idempotency_key_reused, nothing written, and the original still replays', async () => {
    const src = await funded(A.key, '1000');
    const dst = await funded(A.key, '0');
    const other = await funded(A.key, '1000');
    const k = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '100', currency: 'USD', metadata: { ref: 'r1' } };
    const first = await raw('POST', '/v1/transfers', A.key, k, body);
    expect(first.status).toBe(201);

    const variants: [string, string, unknown][] = [
      ['another amount', '/v1/transfers', { ...body, amount: '101' }],
      ['another destination', '/v1/transfers', { ...body, destinationAccountId: other }],
      ['another source (another actor)', '/v1/transfers', { ...body, sourceAccountId: other }],
      ['other metadata', '/v1/transfers', { ...body, metadata: { ref: 'r2' } }],
      ['no metadata', '/v1/transfers', { sourceAccountId: src, destinationAccountId: dst, amount: '100', currency: 'USD' }],
      ['another endpoint (deposit)', '/v1/deposits', { accountId: src, amount: '100', currency: 'USD' }],
      ['another endpoint (withdrawal)', '/v1/withdrawals', { accountId: src, amount: '100', currency: 'USD' }],
      ['another endpoint (account open)', '/v1/accounts', { currency: 'USD' }],
    ];
    const before = await counts();
    const balances = [await balance(A.key, src), await balance(A.key, dst), await balance(A.key, other)];
    for (const [label, url, b] of variants) {
      const r = await raw('POST', url, A.key, k, b);
      expect(r.status, `${label}: ${r.text}`).toBe(422);
      expectProblem(r, 422, 'idempotency_key_reused');
    }
    expect(await counts()).toEqual(before);
    expect([await balance(A.key, src), await balance(A.key, dst), await balance(A.key, other)]).toEqual(balances);
    expect(balances).toEqual(['900', '100', '1000']);

    const again = await raw('POST', '/v1/transfers', A.key, k, body);
    expect(again.status).toBe(201);
    expect(again.text).toBe(first.text);
  });

  it('the same JSON with its keys in another order is the same request', async () => {
    const src = await funded(A.key, '1000');
    const dst = await funded(A.key, '0');
    const k = idem();
    const first = await raw('POST', '/v1/transfers', A.key, k, { sourceAccountId: src, destinationAccountId: dst, amount: '5', currency: 'USD', metadata: { x: 1, y: 2 } });
    expect(first.status).toBe(201);
    const again = await raw('POST', '/v1/transfers', A.key, k, { metadata: { y: 2, x: 1 }, currency: 'USD', amount: '5', destinationAccountId: dst, sourceAccountId: src });
    expect(again.status).toBe(201);
    expect(again.body.id).toBe(first.body.id);
    expect(await transferRows(src)).toBe('1');
    expect(await balance(A.key, src)).toBe('995');
  });

  it('a business rejection is remembered: insufficient_funds replays as the same 422 even after the account is funded', async () => {
    const src = await funded(A.key, '0');
    const dst = await funded(A.key, '0');
    const k = idem();
    const body = { sourceAccountId: src, destinationAccountId: dst, amount: '500', currency: 'USD' };
    const first = await raw('POST', '/v1/transfers', A.key, k, body);
    expectProblem(first, 422, 'insufficient_funds');

    expect((await t.deposit(A.key, src, '1000')).status).toBe(201);
    const before = await counts();
    const again = await raw('POST', '/v1/transfers', A.key, k, body);
    expectProblem(again, 422, 'insufficient_funds');
    expect(again.text).toBe(first.text);
    expect(await counts()).toEqual(before);
    expect(await transferRows(src)).toBe('0');
    expect(await balance(A.key, src)).toBe('1000');
    expect(await balance(A.key, dst)).toBe('0');

    // A new key is a new request, and it goes through.
    const fresh = await raw('POST', '/v1/transfers', A.key, idem(), body);
    expect(fresh.status, fresh.text).toBe(201);
    expect(await balance(A.key, src)).toBe('500');
  });
});

describe('deposits and withdrawals', () => {
  it('a replayed deposit answers the same bytes and credits once; another body is refused and writes nothing', async () => {
    const acc = await funded(A.key, '0');
    const k = idem();
    const body = { accountId: acc, amount: '250', currency: 'USD' };
    const first = await raw('POST', '/v1/deposits', A.key, k, body);
    expect(first.status).toBe(201);
    const again = await raw('POST', '/v1/deposits', A.key, k, body);
    expect(again.status).toBe(201);
    expect(again.text).toBe(first.text);
    expect(await credits(first.body.id)).toBe('1');
    expect(await debits(first.body.id)).toBe('1');
    expect(await balance(A.key, acc)).toBe('250');

    const before = await counts();
    const reused = await raw('POST', '/v1/deposits', A.key, k, { ...body, amount: '2500' });
    expectProblem(reused, 422, 'idempotency_key_reused');
    expect(await counts()).toEqual(before);
    expect(await balance(A.key, acc)).toBe('250');
  });

  it('20 concurrent duplicate deposits credit once', async () => {
    const acc = await funded(A.key, '0');
    const k = idem();
    const body = { accountId: acc, amount: '40', currency: 'USD' };
    const all = await Promise.all(Array.from({ length: 20 }, () => raw('POST', '/v1/deposits', A.key, k, body)));
    expect(new Set(all.map((r) => r.status))).toEqual(new Set([201]));
    expect(new Set(all.map((r) => r.text)).size).toBe(1);
    expect(await q1("SELECT count(*) FROM journal WHERE account_id = $1 AND kind = 'credit'", [acc])).toBe('1');
    expect(await balance(A.key, acc)).toBe('40');
  });

  it('a replayed withdrawal debits once', async () => {
    const acc = await funded(A.key, '100');
    const k = idem();
    const body = { accountId: acc, amount: '30', currency: 'USD' };
    const first = await raw('POST', '/v1/withdrawals', A.key, k, body);
    expect(first.status).toBe(201);
    const again = await raw('POST', '/v1/withdrawals', A.key, k, body);
    expect(again.text).toBe(first.text);
    expect(await debits(first.body.id)).toBe('1');
    expect(await balance(A.key, acc)).toBe('70');
  });
});

describe('account opening', () => {
  it('two opens with one key give the same account, and one accounts row', async () => {
    const { id: tenantId, key } = await t.tenant('opener');
    const k = idem();
    const body = { currency: 'EUR', metadata: { owner: 'x' } };
    const first = await raw('POST', '/v1/accounts', key, k, body);
    expect(first.status).toBe(201);
    const again = await raw('POST', '/v1/accounts', key, k, body);
    expect(again.status).toBe(201);
    expect(again.body.id).toBe(first.body.id);
    expect(again.text).toBe(first.text);
    expect(await q1('SELECT count(*) FROM accounts WHERE tenant_id = $1', [tenantId])).toBe('1');

    const before = await counts();
    const reused = await raw('POST', '/v1/accounts', key, k, { currency: 'USD', metadata: { owner: 'x' } });
    expectProblem(reused, 422, 'idempotency_key_reused');
    expect(await counts()).toEqual(before);
  });

  it('20 concurrent opens with one key open one account', async () => {
    const { id: tenantId, key } = await t.tenant('concurrent-opener');
    const k = idem();
    const all = await Promise.all(Array.from({ length: 20 }, () => raw('POST', '/v1/accounts', key, k, { currency: 'GBP' })));
    expect(new Set(all.map((r) => r.status))).toEqual(new Set([201]));
    expect(new Set(all.map((r) => r.text)).size).toBe(1);
    expect(await q1('SELECT count(*) FROM accounts WHERE tenant_id = $1', [tenantId])).toBe('1');
    expect(await q1('SELECT count(*) FROM journal WHERE account_id = $1', [all[0]!.body.id])).toBe('1');
  });

  it('a replayed open answers what the open answered, even after money has moved', async () => {
    const k = idem();
    const first = await raw('POST', '/v1/accounts', A.key, k, { currency: 'USD' });
    expect(first.status).toBe(201);
    expect((await t.deposit(A.key, first.body.id, '10')).status).toBe(201);
    const again = await raw('POST', '/v1/accounts', A.key, k, { currency: 'USD' });
    expect(again.status).toBe(201);
    expect(again.text).toBe(first.text);
    expect(await balance(A.key, first.body.id)).toBe('10');
  });
});

describe('freeze and unfreeze (the key is optional there)', () => {
  it('a replayed freeze answers the first answer and does not freeze the account again after an unfreeze', async () => {
    const acc = await funded(A.key, '10');
    const k = idem();
    const first = await raw('POST', `/v1/accounts/${acc}/freeze`, A.key, k);
    expect(first.status, first.text).toBe(200);
    expect(first.body.status).toBe('frozen');
    const again = await raw('POST', `/v1/accounts/${acc}/freeze`, A.key, k);
    expect(again.text).toBe(first.text);
    expect((await raw('POST', `/v1/accounts/${acc}/unfreeze`, A.key, idem())).body.status).toBe('open');
    const journal = await q1('SELECT count(*) FROM journal WHERE account_id = $1', [acc]);
    const late = await raw('POST', `/v1/accounts/${acc}/freeze`, A.key, k);
    expect(late.status).toBe(200);
    expect(late.text).toBe(first.text);
    expect(await q1('SELECT count(*) FROM journal WHERE account_id = $1', [acc])).toBe(journal);
    expect((await t.call('GET', `/v1/accounts/${acc}`, { key: A.key })).body.status).toBe('open');
    // The same key on another action is another request.
    expectProblem(await raw('POST', `/v1/accounts/${acc}/unfreeze`, A.key, k), 422, 'idempotency_key_reused');
  });
});

describe('across a restart of the node', () => {
  it('keys survive: replays after the restart answer the same and apply nothing twice', async () => {
    const src = await funded(A.key, '1000');
    const dst = await funded(A.key, '0');
    const poor = await funded(A.key, '0');
    const kTr = idem();
    const kDep = idem();
    const kOpen = idem();
    const kRej = idem();
    const trBody = { sourceAccountId: src, destinationAccountId: dst, amount: '300', currency: 'USD', metadata: { why: 'rent', amount: 3 } };
    const depBody = { accountId: dst, amount: '45', currency: 'USD' };
    const rejBody = { sourceAccountId: poor, destinationAccountId: dst, amount: '1', currency: 'USD' };
    const tr = await raw('POST', '/v1/transfers', A.key, kTr, trBody);
    const dep = await raw('POST', '/v1/deposits', A.key, kDep, depBody);
    const open = await raw('POST', '/v1/accounts', A.key, kOpen, { currency: 'CHF' });
    const rej = await raw('POST', '/v1/transfers', A.key, kRej, rejBody);
    expect([tr.status, dep.status, open.status, rej.status]).toEqual([201, 201, 201, 422]);

    await t.restart();
    // The rejected source is funded after the restart: the remembered rejection still holds.
    expect((await t.deposit(A.key, poor, '5')).status).toBe(201);
    const before = await counts();

    const tr2 = await raw('POST', '/v1/transfers', A.key, kTr, trBody);
    const dep2 = await raw('POST', '/v1/deposits', A.key, kDep, depBody);
    const open2 = await raw('POST', '/v1/accounts', A.key, kOpen, { currency: 'CHF' });
    const rej2 = await raw('POST', '/v1/transfers', A.key, kRej, rejBody);
    expect([tr2.status, dep2.status, open2.status, rej2.status]).toEqual([201, 201, 201, 422]);
    expect(tr2.text).toBe(tr.text);
    expect(dep2.text).toBe(dep.text);
    expect(open2.text).toBe(open.text);
    expect(rej2.text).toBe(rej.text);
    expect(await counts()).toEqual(before);

    // The keys still refuse a different request after the restart.
    const reused = await raw('POST', '/v1/transfers', A.key, kTr, { ...trBody, amount: '301' });
    expectProblem(reused, 422, 'idempotency_key_reused');

    expect(await debits(tr.body.id)).toBe('1');
    expect(await credits(dep.body.id)).toBe('1');
    expect(await balance(A.key, src)).toBe('700');
    expect(await balance(A.key, dst)).toBe('345');
    expect(await balance(A.key, poor)).toBe('5');
  });
});

describe('keys are scoped to their tenant', () => {
  it('two tenants use the same key string independently, and neither sees the other\'s answer', async () => {
    const shared = `shared-${idem()}`;
    const openA = await raw('POST', '/v1/accounts', A.key, shared, { currency: 'USD' });
    const openB = await raw('POST', '/v1/accounts', B.key, shared, { currency: 'EUR' });
    expect(openA.status, openA.text).toBe(201);
    expect(openB.status, openB.text).toBe(201);
    expect(openB.body.id).not.toBe(openA.body.id);
    expect(openA.body).toMatchObject({ tenantId: A.id, currency: 'USD' });
    expect(openB.body).toMatchObject({ tenantId: B.id, currency: 'EUR' });
    expect(openB.text).not.toContain(A.id);
    expect(await q1('SELECT count(*) FROM idempotency_keys WHERE key = $1', [shared])).toBe('2');

    // The same string on money movement, with different bodies, in both tenants.
    const depKey = `shared-dep-${idem()}`;
    const depA = await raw('POST', '/v1/deposits', A.key, depKey, { accountId: openA.body.id, amount: '11', currency: 'USD' });
    const depB = await raw('POST', '/v1/deposits', B.key, depKey, { accountId: openB.body.id, amount: '22', currency: 'EUR' });
    expect([depA.status, depB.status]).toEqual([201, 201]);
    expect(await balance(A.key, openA.body.id)).toBe('11');
    expect(await balance(B.key, openB.body.id)).toBe('22');

    // Concurrently too.
    const k = `shared-concurrent-${idem()}`;
    const [ca, cb] = await Promise.all([
      raw('POST', '/v1/deposits', A.key, k, { accountId: openA.body.id, amount: '1', currency: 'USD' }),
      raw('POST', '/v1/deposits', B.key, k, { accountId: openB.body.id, amount: '2', currency: 'EUR' }),
    ]);
    expect([ca.status, cb.status]).toEqual([201, 201]);
    expect(await balance(A.key, openA.body.id)).toBe('12');
    expect(await balance(B.key, openB.body.id)).toBe('24');

    // Each tenant's replay gives back its own answer.
    const againB = await raw('POST', '/v1/accounts', B.key, shared, { currency: 'EUR' });
    expect(againB.text).toBe(openB.text);
  });
});
