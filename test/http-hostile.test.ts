// Hostile input at the HTTP edge: malformed bodies, bad amounts and currencies, other tenants'
// ids, bad keys, missing Idempotency-Keys, oversized and mistyped bodies, unknown routes.
// Each case must answer a 4xx application/problem+json with the documented stable code, never
// a 5xx, and write nothing: row counts of every table and all balances are compared around it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { ERRORS } from '../src/http/errors.ts';

type Opts = { key?: string; body?: unknown; idem?: string; headers?: Record<string, string>; rawBody?: string };
interface Req { method: string; url: string; opts: Opts }
interface Case {
  name: string;
  req: () => Req;
  status: number;
  code: string;
  /** A business rejection decided by the actor: its Idempotency-Key is remembered (one row). */
  keyRow?: boolean;
  /** Another code that is also a correct answer (a JSON value of the wrong type: validation_failed). */
  alt?: string;
}

const MAX = '9223372036854775807';
const SECRET = 'tenant-b-secret-marker-4f1c';
const GHOST_ACC = `acc_local_${'0'.repeat(32)}`;
const GHOST_TR = `tr_local_${'0'.repeat(32)}`;

let t: TestNode;
let A: { id: string; key: string };
let B: { id: string; key: string };
let a1: string; // USD, balance 1000
let a2: string; // USD, balance 0
let aEur: string; // EUR, balance 500
let b1: string; // tenant B, USD, balance 777100, metadata holds SECRET
let b2: string; // tenant B, USD, balance 23
let trB: string; // tenant B's transfer b1 -> b2

beforeAll(async () => {
  t = await startTestNode('hostile');
  A = await t.tenant('tenant-a');
  B = await t.tenant('tenant-b');
  a1 = await t.account(A.key, 'USD');
  a2 = await t.account(A.key, 'USD');
  aEur = await t.account(A.key, 'EUR');
  b1 = await t.account(B.key, 'USD', { metadata: { secret: SECRET } });
  b2 = await t.account(B.key, 'USD');
  expect((await t.deposit(A.key, a1, '1000')).status).toBe(201);
  expect((await t.deposit(A.key, aEur, '500', 'EUR')).status).toBe(201);
  expect((await t.deposit(B.key, b1, '777123')).status).toBe(201);
  const tr = await t.call('POST', '/v1/transfers', { key: B.key, idem: idem(), body: { sourceAccountId: b1, destinationAccountId: b2, amount: '23', currency: 'USD' } });
  expect(tr.status).toBe(201);
  trB = tr.body.id;
});
afterAll(async () => { await t?.close(); });

// ---------------------------------------------------------------------------------------------
// Helpers

interface Snapshot {
  counts: Record<string, string>;
  balances: Record<string, string>;
  api: Record<string, string>;
  keys: string[];
}

/** Everything a request could have written: row counts, the last balance of every account in
 * the journal, the balances and statuses the API itself reports, and the idempotency keys. */
async function snapshot(): Promise<Snapshot> {
  const { rows } = await t.node.pool.query<Record<string, bigint>>(
    `SELECT (SELECT count(*) FROM journal) AS journal, (SELECT count(*) FROM transfers) AS transfers,
            (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM idempotency_keys) AS idempotency_keys,
            (SELECT count(*) FROM api_keys) AS api_keys, (SELECT count(*) FROM tenants) AS tenants`);
  const counts = Object.fromEntries(Object.entries(rows[0]!).map(([k, v]) => [k, String(v)]));
  const bal = await t.node.pool.query<{ account_id: string; balance_after: bigint; seq: bigint }>(
    'SELECT DISTINCT ON (account_id) account_id, balance_after, seq FROM journal ORDER BY account_id, seq DESC');
  const balances = Object.fromEntries(bal.rows.map((r) => [r.account_id, `${r.balance_after}@${r.seq}`]));
  const api: Record<string, string> = {};
  for (const [key, id] of [[A.key, a1], [A.key, a2], [A.key, aEur], [B.key, b1], [B.key, b2]] as const) {
    const r = await t.call('GET', `/v1/accounts/${id}`, { key });
    api[id] = `${r.status} ${r.body.status} ${r.body.balance} ${r.body.available}`;
  }
  const ks = await t.node.pool.query<{ tenant_id: string; key: string }>('SELECT tenant_id, key FROM idempotency_keys ORDER BY 1, 2');
  return { counts, balances, api, keys: ks.rows.map((r) => `${r.tenant_id}/${r.key}`) };
}

function expectProblem(r: { status: number; body: any; headers: Record<string, unknown> }, status: number, code: string): void {
  const what = JSON.stringify(r.body).slice(0, 300);
  expect(r.status, `never a 5xx: ${what}`).toBeLessThan(500);
  expect(r.status, what).toBe(status);
  expect(String(r.headers['content-type']), what).toMatch(/^application\/problem\+json/);
  expect(r.body, what).toMatchObject({ code, status, type: `https://geopay.dev/errors/${code}` });
  expect(typeof r.body.title).toBe('string');
  expect(ERRORS[code as keyof typeof ERRORS]?.status, `${code} is a registered code with status ${status}`).toBe(status);
}

async function call(req: Req) {
  return t.call(req.method, req.url, req.opts);
}

/** The request is answered with the problem and leaves the database and every balance as they were. */
async function expectRejected(c: Case): Promise<{ status: number; body: any; headers: Record<string, unknown> }> {
  const req = c.req();
  const before = await snapshot();
  const r = await call(req);
  expectProblem(r, c.status, c.alt !== undefined && r.body?.code === c.alt ? c.alt : c.code);
  const after = await snapshot();
  expect(after.balances).toEqual(before.balances);
  expect(after.api).toEqual(before.api);
  if (c.keyRow) {
    // The rejection is remembered with its key (docs/errors.md), and nothing else changed.
    expect({ ...after.counts, idempotency_keys: before.counts.idempotency_keys }).toEqual(before.counts);
    expect(Number(after.counts.idempotency_keys) - Number(before.counts.idempotency_keys)).toBe(1);
    const k = await t.node.pool.query<{ status_code: number | null }>('SELECT status_code FROM idempotency_keys WHERE key = $1', [req.opts.idem]);
    expect(k.rows.map((x) => x.status_code)).toEqual([c.status]);
  } else {
    expect(after.counts).toEqual(before.counts);
    expect(after.keys).toEqual(before.keys);
  }
  return r;
}

const post = (url: string, body: unknown, opts: Opts = {}): Req => ({ method: 'POST', url, opts: { key: A.key, idem: idem(), body, ...opts } });
const get = (url: string, opts: Opts = {}): Req => ({ method: 'GET', url, opts: { key: A.key, ...opts } });
const trBody = (over: Record<string, unknown> = {}) => ({ sourceAccountId: a1, destinationAccountId: a2, amount: '10', currency: 'USD', ...over });
const depBody = (over: Record<string, unknown> = {}) => ({ accountId: a1, amount: '10', currency: 'USD', ...over });
const accBody = (over: Record<string, unknown> = {}) => ({ currency: 'USD', ...over });

/** The three money endpoints with a valid body each; a case overrides one field. */
const MONEY = [
  { ep: 'transfers', body: trBody },
  { ep: 'deposits', body: depBody },
  { ep: 'withdrawals', body: depBody },
] as const;

const huge = 'x'.repeat(70 * 1024);

// ---------------------------------------------------------------------------------------------

describe('the valid base requests really do succeed (so each case below fails for its one defect)', () => {
  it('a base transfer, deposit, withdrawal and account open are accepted', async () => {
    for (const [url, body] of [['/v1/transfers', trBody()], ['/v1/deposits', depBody()], ['/v1/withdrawals', depBody()], ['/v1/accounts', accBody()]] as const) {
      const r = await t.call('POST', url, { key: A.key, idem: idem(), body });
      expect(r.status, `${url}: ${JSON.stringify(r.body)}`).toBeGreaterThanOrEqual(200);
      expect(r.status, `${url}: ${JSON.stringify(r.body)}`).toBeLessThan(300);
    }
    // Put a1 back at 1000 (transfer -10, deposit +10, withdrawal -10) and a2 (+10) back at 0.
    expect((await t.call('POST', '/v1/transfers', { key: A.key, idem: idem(), body: trBody({ sourceAccountId: a2, destinationAccountId: a1, amount: '10' }) })).status).toBe(201);
    expect((await t.call('GET', `/v1/accounts/${a1}`, { key: A.key })).body.balance).toBe('1000');
    expect((await t.call('GET', `/v1/accounts/${a2}`, { key: A.key })).body.balance).toBe('0');
  });
});

describe('malformed and mis-shaped bodies', () => {
  const cases: Case[] = [
    { name: 'transfer: truncated JSON', req: () => post('/v1/transfers', undefined, { rawBody: '{"sourceAccountId": ' }), status: 400, code: 'malformed_json' },
    { name: 'deposit: trailing comma', req: () => post('/v1/deposits', undefined, { rawBody: `{"accountId":"${a1}","amount":"10","currency":"USD",}` }), status: 400, code: 'malformed_json' },
    { name: 'account: not JSON at all', req: () => post('/v1/accounts', undefined, { rawBody: 'currency=USD' }), status: 400, code: 'malformed_json' },
    { name: 'withdrawal: single quotes', req: () => post('/v1/withdrawals', undefined, { rawBody: "{'accountId':'x'}" }), status: 400, code: 'malformed_json' },
    { name: 'transfer: empty body declared as JSON', req: () => post('/v1/transfers', undefined, { rawBody: '' }), status: 400, code: 'malformed_json' },
    { name: 'tenant (admin): truncated JSON', req: () => post('/v1/tenants', undefined, { key: t.adminKey, rawBody: '{"name":' }), status: 400, code: 'malformed_json' },
    { name: 'deposit: no body at all', req: () => post('/v1/deposits', undefined), status: 400, code: 'validation_failed' },
    { name: 'deposit: JSON null', req: () => post('/v1/deposits', undefined, { rawBody: 'null' }), status: 400, code: 'validation_failed' },
    { name: 'deposit: JSON array', req: () => post('/v1/deposits', [depBody()]), status: 400, code: 'validation_failed' },
    { name: 'transfer: JSON string', req: () => post('/v1/transfers', 'transfer everything'), status: 400, code: 'validation_failed' },
    // Missing fields.
    { name: 'transfer: no sourceAccountId', req: () => post('/v1/transfers', trBody({ sourceAccountId: undefined })), status: 400, code: 'validation_failed' },
    { name: 'transfer: no destinationAccountId', req: () => post('/v1/transfers', trBody({ destinationAccountId: undefined })), status: 400, code: 'validation_failed' },
    { name: 'transfer: no amount', req: () => post('/v1/transfers', trBody({ amount: undefined })), status: 400, code: 'validation_failed' },
    { name: 'transfer: no currency', req: () => post('/v1/transfers', trBody({ currency: undefined })), status: 400, code: 'validation_failed' },
    { name: 'transfer: empty object', req: () => post('/v1/transfers', {}), status: 400, code: 'validation_failed' },
    { name: 'deposit: no accountId', req: () => post('/v1/deposits', depBody({ accountId: undefined })), status: 400, code: 'validation_failed' },
    { name: 'withdrawal: no amount', req: () => post('/v1/withdrawals', depBody({ amount: undefined })), status: 400, code: 'validation_failed' },
    { name: 'account: no currency', req: () => post('/v1/accounts', {}), status: 400, code: 'validation_failed' },
    { name: 'tenant (admin): no name', req: () => post('/v1/tenants', {}, { key: t.adminKey }), status: 400, code: 'validation_failed' },
    { name: 'tenant (admin): empty name', req: () => post('/v1/tenants', { name: '' }, { key: t.adminKey }), status: 400, code: 'validation_failed' },
    // Wrong types of the id fields and of metadata.
    { name: 'transfer: sourceAccountId as a number', req: () => post('/v1/transfers', trBody({ sourceAccountId: 12345 })), status: 400, code: 'validation_failed' },
    { name: 'transfer: destinationAccountId as an array', req: () => post('/v1/transfers', trBody({ destinationAccountId: [a2] })), status: 400, code: 'validation_failed' },
    { name: 'deposit: accountId as null', req: () => post('/v1/deposits', depBody({ accountId: null })), status: 400, code: 'validation_failed' },
    { name: 'deposit: metadata as a string', req: () => post('/v1/deposits', depBody({ metadata: 'note' })), status: 400, code: 'validation_failed' },
    { name: 'deposit: metadata as an array', req: () => post('/v1/deposits', depBody({ metadata: ['note'] })), status: 400, code: 'validation_failed' },
    { name: 'account: metadata with 51 properties', req: () => post('/v1/accounts', accBody({ metadata: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, i])) })), status: 400, code: 'validation_failed' },
    { name: 'account: region as a number', req: () => post('/v1/accounts', accBody({ region: 7 })), status: 400, code: 'validation_failed' },
    // Extra, unknown fields: nobody sets a balance, a fee or a tenant through the body.
    { name: 'transfer: extra field "fee"', req: () => post('/v1/transfers', trBody({ fee: '1' })), status: 400, code: 'validation_failed' },
    { name: 'transfer: extra field "tenantId"', req: () => post('/v1/transfers', trBody({ tenantId: 'ten_x' })), status: 400, code: 'validation_failed' },
    { name: 'deposit: extra field "state"', req: () => post('/v1/deposits', depBody({ state: 'settled' })), status: 400, code: 'validation_failed' },
    { name: 'withdrawal: extra field "destinationAccountId"', req: () => post('/v1/withdrawals', depBody({ destinationAccountId: a2 })), status: 400, code: 'validation_failed' },
    { name: 'account: extra field "balance"', req: () => post('/v1/accounts', accBody({ balance: '1000000' })), status: 400, code: 'validation_failed' },
    { name: 'account: extra field "tenantId"', req: () => post('/v1/accounts', accBody({ tenantId: 'ten_other' })), status: 400, code: 'validation_failed' },
    { name: 'account: extra field "id"', req: () => post('/v1/accounts', accBody({ id: GHOST_ACC })), status: 400, code: 'validation_failed' },
    { name: 'tenant (admin): extra field', req: () => post('/v1/tenants', { name: 'x', admin: true }, { key: t.adminKey }), status: 400, code: 'validation_failed' },
  ];
  it.each(cases)('$name -> $status $code', async (c) => { await expectRejected(c); });
});

describe('amounts: strings of integer minor units from "1" to "9223372036854775807", nothing else (docs/errors.md: invalid_amount)', () => {
  // docs/errors.md names JSON numbers under invalid_amount; a value of another JSON type may
  // also be answered validation_failed ("a wrong type").
  const BAD: [string, unknown, string?][] = [
    ['"0"', '0'], ['"-5"', '-5'], ['"1.5"', '1.5'], ['"1e3"', '1e3'], ['" 10"', ' 10'], ['"10 "', '10 '], ['"abc"', 'abc'], ['""', ''],
    ['"+5"', '+5'], ['"007" (leading zeros)', '007'], ['"0x10"', '0x10'], ['"１０" (full-width digits)', '１０'],
    ['2^63 "9223372036854775808"', '9223372036854775808'], ['a 30-digit amount', '123456789012345678901234567890'],
    ['the JSON number 100', 100], ['the JSON number 1.5', 1.5],
    ['true', true, 'validation_failed'], ['an object', { value: '10' }, 'validation_failed'], ['null', null, 'validation_failed'], ['an array', ['10'], 'validation_failed'],
  ];
  const cases: Case[] = MONEY.flatMap(({ ep, body }) => BAD.map(([label, amount, alt]): Case => ({
    name: `${ep}: amount ${label}`, req: () => post(`/v1/${ep}`, body({ amount })), status: 400, code: 'invalid_amount', ...(alt ? { alt } : {}),
  })));
  cases.push(
    { name: 'account: overdraftLimit "-1"', req: () => post('/v1/accounts', accBody({ overdraftLimit: '-1' })), status: 400, code: 'invalid_amount' },
    { name: 'account: overdraftLimit "1.5"', req: () => post('/v1/accounts', accBody({ overdraftLimit: '1.5' })), status: 400, code: 'invalid_amount' },
    { name: 'account: overdraftLimit 2^63', req: () => post('/v1/accounts', accBody({ overdraftLimit: '9223372036854775808' })), status: 400, code: 'invalid_amount' },
    { name: 'account: overdraftLimit the JSON number 5', req: () => post('/v1/accounts', accBody({ overdraftLimit: 5 })), status: 400, code: 'invalid_amount' },
  );
  it.each(cases)('$name -> $status $code', async (c) => { await expectRejected(c); });

  // The largest amount is syntactically valid: it goes to the ledger and is refused there as a
  // business outcome (a 422 whose rejection is remembered with the key), moving nothing.
  const max: Case[] = [
    { name: `transfer of ${MAX} from an account holding 1000`, req: () => post('/v1/transfers', trBody({ amount: MAX })), status: 422, code: 'insufficient_funds', keyRow: true },
    { name: `withdrawal of ${MAX} from an account holding 1000`, req: () => post('/v1/withdrawals', depBody({ amount: MAX })), status: 422, code: 'insufficient_funds', keyRow: true },
    { name: `deposit of ${MAX} to an account holding 1000`, req: () => post('/v1/deposits', depBody({ amount: MAX })), status: 422, code: 'balance_out_of_range', keyRow: true },
    { name: 'transfer of 1001 from an account holding 1000', req: () => post('/v1/transfers', trBody({ amount: '1001' })), status: 422, code: 'insufficient_funds', keyRow: true },
  ];
  it.each(max)('$name -> $status $code', async (c) => { await expectRejected(c); });
});

describe('currencies: supported upper-case ISO 4217 codes only (docs/errors.md: unknown_currency)', () => {
  // docs/errors.md: "Codes are upper case ("EUR", not "eur")" under unknown_currency. A number
  // is a wrong JSON type and may also be answered validation_failed.
  const BAD: [string, unknown, string?][] = [['"XYZ"', 'XYZ'], ['lower case "usd"', 'usd'], ['"Usd"', 'Usd'], ['"US"', 'US'], ['"USDD"', 'USDD'], ['the number 840', 840, 'validation_failed']];
  const cases: Case[] = [
    ...MONEY.flatMap(({ ep, body }) => BAD.map(([label, currency, alt]): Case => ({
      name: `${ep}: currency ${label}`, req: () => post(`/v1/${ep}`, body({ currency })), status: 400, code: 'unknown_currency', ...(alt ? { alt } : {}),
    }))),
    ...BAD.map(([label, currency, alt]): Case => ({ name: `account: currency ${label}`, req: () => post('/v1/accounts', accBody({ currency })), status: 400, code: 'unknown_currency', ...(alt ? { alt } : {}) })),
  ];
  it.each(cases)('$name -> $status $code', async (c) => { await expectRejected(c); });
});

describe('business rules checked before anything moves', () => {
  const cases: Case[] = [
    { name: 'transfer USD account -> EUR account in USD', req: () => post('/v1/transfers', trBody({ destinationAccountId: aEur })), status: 422, code: 'currency_mismatch' },
    { name: 'transfer USD account -> EUR account in EUR', req: () => post('/v1/transfers', trBody({ destinationAccountId: aEur, currency: 'EUR' })), status: 422, code: 'currency_mismatch' },
    { name: 'transfer EUR account -> USD account in EUR', req: () => post('/v1/transfers', trBody({ sourceAccountId: aEur, currency: 'EUR' })), status: 422, code: 'currency_mismatch' },
    { name: 'transfer USD -> USD in GBP', req: () => post('/v1/transfers', trBody({ currency: 'GBP' })), status: 422, code: 'currency_mismatch' },
    { name: 'deposit in EUR to a USD account', req: () => post('/v1/deposits', depBody({ currency: 'EUR' })), status: 422, code: 'currency_mismatch' },
    { name: 'withdrawal in EUR from a USD account', req: () => post('/v1/withdrawals', depBody({ currency: 'EUR' })), status: 422, code: 'currency_mismatch' },
    { name: 'deposit in JPY to a USD account (no JPY external account yet)', req: () => post('/v1/deposits', depBody({ currency: 'JPY' })), status: 422, code: 'currency_mismatch' },
    { name: 'transfer to the same account', req: () => post('/v1/transfers', trBody({ destinationAccountId: a1 })), status: 422, code: 'same_account' },
  ];
  it.each(cases)('$name -> $status $code', async (c) => { await expectRejected(c); });
});

describe("another tenant's resources look exactly like ones that do not exist", () => {
  let ghostAccount: unknown;
  let ghostTransfer: unknown;
  beforeAll(async () => {
    ghostAccount = (await t.call('GET', `/v1/accounts/${GHOST_ACC}`, { key: A.key })).body;
    ghostTransfer = (await t.call('GET', `/v1/transfers/${GHOST_TR}`, { key: A.key })).body;
  });

  const acc: Case[] = [
    { name: 'GET /v1/accounts/:id', req: () => get(`/v1/accounts/${b1}`), status: 404, code: 'account_not_found' },
    { name: 'GET /v1/accounts/:id/statement', req: () => get(`/v1/accounts/${b1}/statement`), status: 404, code: 'account_not_found' },
    { name: 'POST freeze (with an Idempotency-Key)', req: () => post(`/v1/accounts/${b1}/freeze`, undefined), status: 404, code: 'account_not_found' },
    { name: 'POST freeze (without one)', req: () => post(`/v1/accounts/${b1}/freeze`, undefined, { idem: undefined }), status: 404, code: 'account_not_found' },
    { name: 'POST unfreeze', req: () => post(`/v1/accounts/${b1}/unfreeze`, undefined), status: 404, code: 'account_not_found' },
    { name: 'POST close (of an empty account)', req: () => post(`/v1/accounts/${b2}/close`, undefined), status: 404, code: 'account_not_found' },
    { name: 'transfer with it as the source', req: () => post('/v1/transfers', trBody({ sourceAccountId: b1, destinationAccountId: a1 })), status: 404, code: 'account_not_found' },
    { name: 'transfer with it as the destination', req: () => post('/v1/transfers', trBody({ destinationAccountId: b1 })), status: 404, code: 'account_not_found' },
    { name: 'transfer with both accounts of the other tenant', req: () => post('/v1/transfers', trBody({ sourceAccountId: b1, destinationAccountId: b2 })), status: 404, code: 'account_not_found' },
    { name: 'deposit to it', req: () => post('/v1/deposits', depBody({ accountId: b1 })), status: 404, code: 'account_not_found' },
    { name: 'withdrawal from it', req: () => post('/v1/withdrawals', depBody({ accountId: b1 })), status: 404, code: 'account_not_found' },
    // The external accounts belong to no tenant: they must not be a source of free money.
    { name: 'GET the external USD account', req: () => get('/v1/accounts/ext_local_USD'), status: 404, code: 'account_not_found' },
    { name: 'transfer from the external USD account', req: () => post('/v1/transfers', trBody({ sourceAccountId: 'ext_local_USD', destinationAccountId: a1 })), status: 404, code: 'account_not_found' },
    { name: 'transfer to the external USD account', req: () => post('/v1/transfers', trBody({ destinationAccountId: 'ext_local_USD' })), status: 404, code: 'account_not_found' },
    { name: 'withdrawal from the external USD account', req: () => post('/v1/withdrawals', depBody({ accountId: 'ext_local_USD' })), status: 404, code: 'account_not_found' },
    { name: 'freeze the external USD account', req: () => post('/v1/accounts/ext_local_USD/freeze', undefined), status: 404, code: 'account_not_found' },
  ];
  it.each(acc)("$name of another tenant's account -> $status $code", async (c) => {
    const r = await expectRejected(c);
    const text = JSON.stringify(r.body);
    for (const leak of [B.id, SECRET, '777100', b1, b2, 'ext_local_USD']) expect(text).not.toContain(leak);
    expect(r.body).toEqual(ghostAccount);
  });

  it("GET /v1/transfers/:id of another tenant's transfer -> 404 transfer_not_found", async () => {
    const r = await expectRejected({ name: 'transfer', req: () => get(`/v1/transfers/${trB}`), status: 404, code: 'transfer_not_found' });
    const text = JSON.stringify(r.body);
    for (const leak of [B.id, trB, b1, b2, '"23"']) expect(text).not.toContain(leak);
    expect(r.body).toEqual(ghostTransfer);
  });

  it("the other tenant's account is untouched and still readable by its owner", async () => {
    const r = await t.call('GET', `/v1/accounts/${b1}`, { key: B.key });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: b1, status: 'open', balance: '777100', tenantId: B.id, metadata: { secret: SECRET } });
    expect((await t.call('GET', `/v1/transfers/${trB}`, { key: B.key })).body).toMatchObject({ id: trB, state: 'settled', amount: '23' });
  });
});

describe('ids, paths and query strings that are not what they claim', () => {
  const cases: Case[] = [
    { name: 'GET an account id in no known format', req: () => get('/v1/accounts/not-an-id'), status: 404, code: 'account_not_found' },
    { name: 'GET an account id with SQL in it', req: () => get(`/v1/accounts/${encodeURIComponent("acc_local_' OR '1'='1")}`), status: 404, code: 'account_not_found' },
    { name: 'GET a well-formed account id that does not exist', req: () => get(`/v1/accounts/${GHOST_ACC}`), status: 404, code: 'account_not_found' },
    { name: 'GET a transfer id in no known format', req: () => get('/v1/transfers/xyz'), status: 404, code: 'transfer_not_found' },
    { name: 'GET an account id longer than 80 characters', req: () => get(`/v1/accounts/${'a'.repeat(100)}`), status: 400, code: 'validation_failed' },
    { name: 'statement: limit=abc', req: () => get(`/v1/accounts/${a1}/statement?limit=abc`), status: 400, code: 'validation_failed' },
    { name: 'statement: limit=-1', req: () => get(`/v1/accounts/${a1}/statement?limit=-1`), status: 400, code: 'validation_failed' },
    { name: 'statement: cursor=abc', req: () => get(`/v1/accounts/${a1}/statement?cursor=abc`), status: 400, code: 'validation_failed' },
    { name: 'statement: cursor beyond a 64-bit integer (9999999999999999999)', req: () => get(`/v1/accounts/${a1}/statement?cursor=9999999999999999999`), status: 400, code: 'validation_failed' },
    { name: 'statement: unknown query parameter', req: () => get(`/v1/accounts/${a1}/statement?tenant=${B.id}`), status: 400, code: 'validation_failed' },
    { name: 'unknown route GET /v1/nope', req: () => get('/v1/nope'), status: 404, code: 'not_found' },
    { name: 'unknown route POST /v1/transfer (singular)', req: () => post('/v1/transfer', trBody()), status: 404, code: 'not_found' },
    { name: 'unknown route GET /v2/accounts', req: () => get('/v2/accounts'), status: 404, code: 'not_found' },
    { name: 'unknown route GET /', req: () => get('/'), status: 404, code: 'not_found' },
    { name: 'unknown method DELETE /v1/accounts/:id', req: () => ({ method: 'DELETE', url: `/v1/accounts/${a1}`, opts: { key: A.key } }), status: 404, code: 'not_found' },
    { name: 'unknown method PUT /v1/transfers', req: () => ({ method: 'PUT', url: '/v1/transfers', opts: { key: A.key, idem: idem(), body: trBody() } }), status: 404, code: 'not_found' },
    { name: 'unknown method PATCH /v1/accounts/:id', req: () => ({ method: 'PATCH', url: `/v1/accounts/${a1}`, opts: { key: A.key, body: { status: 'closed' } } }), status: 404, code: 'not_found' },
  ];
  it.each(cases)('$name -> $status $code', async (c) => { await expectRejected(c); });
});

describe('authentication: 401 unauthorized, and the key is never echoed', () => {
  const AUTH: [string, () => Record<string, string>][] = [
    ['no Authorization header', () => ({})],
    ['a Basic credential', () => ({ authorization: 'Basic dXNlcjpwYXNz' })],
    ['"Bearer" with no key', () => ({ authorization: 'Bearer' })],
    ['"Bearer " with an empty key', () => ({ authorization: 'Bearer ' })],
    ['the tenant key with no scheme', () => ({ authorization: A.key })],
    ['the tenant key under another scheme ("Token")', () => ({ authorization: `Token ${A.key}` })],
    ['the tenant key with one character more', () => ({ authorization: `Bearer ${A.key}x` })],
    ['the tenant key with one character less', () => ({ authorization: `Bearer ${A.key.slice(0, -1)}` })],
    ['two keys', () => ({ authorization: `Bearer ${A.key} ${B.key}` })],
    ['an unknown key', () => ({ authorization: 'Bearer gp_tenant_doesnotexistdoesnotexist' })],
    ['a 300-character key', () => ({ authorization: `Bearer ${'k'.repeat(300)}` })],
    ['a key with a control character', () => ({ authorization: `Bearer ${A.key.slice(0, 5)}\tx` })],
  ];
  const TARGETS: [string, () => Req][] = [
    ['GET /v1/accounts/:id', () => ({ method: 'GET', url: `/v1/accounts/${a1}`, opts: {} })],
    ['POST /v1/transfers', () => ({ method: 'POST', url: '/v1/transfers', opts: { idem: idem(), body: trBody() } })],
    ['POST /v1/tenants', () => ({ method: 'POST', url: '/v1/tenants', opts: { idem: idem(), body: { name: 'intruder' } } })],
  ];
  const cases: Case[] = TARGETS.flatMap(([target, req]) => AUTH.map(([label, headers]): Case => ({
    name: `${target} with ${label}`,
    req: () => { const r = req(); return { ...r, opts: { ...r.opts, headers: headers() } }; },
    status: 401, code: 'unauthorized',
  })));
  it.each(cases)('$name -> $status $code', async (c) => {
    const r = await expectRejected(c);
    const text = JSON.stringify(r.body);
    expect(text).not.toContain(A.key);
    expect(text).not.toContain(B.key);
  });
});

describe('authorisation: 403 forbidden across the tenant/admin line', () => {
  const tenantOnAdmin: Case[] = [
    { name: 'POST /v1/tenants', req: () => post('/v1/tenants', { name: 'mine' }), status: 403, code: 'forbidden' },
    { name: 'GET /v1/tenants', req: () => get('/v1/tenants'), status: 403, code: 'forbidden' },
    { name: 'POST /v1/tenants/:own-id/keys', req: () => post(`/v1/tenants/${A.id}/keys`, undefined), status: 403, code: 'forbidden' },
    { name: "POST /v1/tenants/:other-tenant's-id/keys", req: () => post(`/v1/tenants/${B.id}/keys`, undefined), status: 403, code: 'forbidden' },
    { name: 'GET /v1/actors/accounts/:own-account', req: () => get(`/v1/actors/accounts/${a1}`), status: 403, code: 'forbidden' },
    { name: "GET /v1/actors/accounts/:other-tenant's-account", req: () => get(`/v1/actors/accounts/${b1}`), status: 403, code: 'forbidden' },
  ];
  it.each(tenantOnAdmin)('a tenant key on $name -> $status $code', async (c) => { await expectRejected(c); });

  const adminOnTenant: Case[] = [
    { name: 'POST /v1/accounts', req: () => post('/v1/accounts', accBody(), { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'GET /v1/accounts/:id', req: () => get(`/v1/accounts/${a1}`, { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'GET /v1/accounts/:id/statement', req: () => get(`/v1/accounts/${a1}/statement`, { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'POST /v1/accounts/:id/freeze', req: () => post(`/v1/accounts/${a1}/freeze`, undefined, { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'POST /v1/accounts/:id/close', req: () => post(`/v1/accounts/${a2}/close`, undefined, { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'POST /v1/transfers', req: () => post('/v1/transfers', trBody(), { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'POST /v1/transfers out of an external account', req: () => post('/v1/transfers', trBody({ sourceAccountId: 'ext_local_USD' }), { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'POST /v1/deposits', req: () => post('/v1/deposits', depBody(), { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'POST /v1/withdrawals', req: () => post('/v1/withdrawals', depBody(), { key: t.adminKey }), status: 403, code: 'forbidden' },
    { name: 'GET /v1/transfers/:id', req: () => get(`/v1/transfers/${trB}`, { key: t.adminKey }), status: 403, code: 'forbidden' },
  ];
  it.each(adminOnTenant)('the admin key on $name -> $status $code', async (c) => { await expectRejected(c); });
});

describe('Idempotency-Key: required on every creating POST, and well-formed', () => {
  const missing: Case[] = [
    { name: 'POST /v1/transfers', req: () => post('/v1/transfers', trBody(), { idem: undefined }), status: 400, code: 'idempotency_key_required' },
    { name: 'POST /v1/deposits', req: () => post('/v1/deposits', depBody(), { idem: undefined }), status: 400, code: 'idempotency_key_required' },
    { name: 'POST /v1/withdrawals', req: () => post('/v1/withdrawals', depBody(), { idem: undefined }), status: 400, code: 'idempotency_key_required' },
    { name: 'POST /v1/accounts', req: () => post('/v1/accounts', accBody(), { idem: undefined }), status: 400, code: 'idempotency_key_required' },
    { name: 'POST /v1/tenants (admin)', req: () => post('/v1/tenants', { name: 'x' }, { key: t.adminKey, idem: undefined }), status: 400, code: 'idempotency_key_required' },
    { name: 'POST /v1/tenants/:id/keys (admin)', req: () => post(`/v1/tenants/${A.id}/keys`, undefined, { key: t.adminKey, idem: undefined }), status: 400, code: 'idempotency_key_required' },
  ];
  it.each(missing)('$name without an Idempotency-Key -> $status $code', async (c) => { await expectRejected(c); });

  const malformed: Case[] = [
    { name: 'an empty key', req: () => post('/v1/transfers', trBody(), { idem: '' }), status: 400, code: 'validation_failed' },
    { name: 'a 256-character key', req: () => post('/v1/transfers', trBody(), { idem: 'k'.repeat(256) }), status: 400, code: 'validation_failed' },
    { name: 'a key with a space', req: () => post('/v1/deposits', depBody(), { idem: 'two words' }), status: 400, code: 'validation_failed' },
    { name: 'a key with a non-ASCII character', req: () => post('/v1/accounts', accBody(), { idem: undefined, headers: { 'idempotency-key': 'clé' } }), status: 400, code: 'validation_failed' },
  ];
  it.each(malformed)('$name -> $status $code', async (c) => { await expectRejected(c); });
});

describe('size and media type of the body', () => {
  const big: Case[] = [
    { name: 'POST /v1/transfers', req: () => post('/v1/transfers', trBody({ metadata: { blob: huge } })), status: 413, code: 'body_too_large' },
    { name: 'POST /v1/deposits', req: () => post('/v1/deposits', depBody({ metadata: { blob: huge } })), status: 413, code: 'body_too_large' },
    { name: 'POST /v1/withdrawals', req: () => post('/v1/withdrawals', depBody({ metadata: { blob: huge } })), status: 413, code: 'body_too_large' },
    { name: 'POST /v1/accounts', req: () => post('/v1/accounts', accBody({ metadata: { blob: huge } })), status: 413, code: 'body_too_large' },
    { name: 'POST /v1/tenants (admin)', req: () => post('/v1/tenants', { name: huge }, { key: t.adminKey }), status: 413, code: 'body_too_large' },
  ];
  it.each(big)('$name with a body over 64 KiB -> $status $code', async (c) => { await expectRejected(c); });

  it.each([
    ['POST /v1/transfers', '/v1/transfers', () => trBody()],
    ['POST /v1/deposits', '/v1/deposits', () => depBody()],
    ['POST /v1/accounts', '/v1/accounts', () => accBody()],
  ] as const)('%s with a valid JSON body sent as text/plain -> 415 unsupported_media_type (or 400 validation_failed)', async (_n, url, body) => {
    const c: Case = { name: url, req: () => post(url, undefined, { rawBody: JSON.stringify(body()), headers: { 'content-type': 'text/plain' } }), status: 0, code: '' };
    const before = await snapshot();
    const r = await call(c.req());
    expect(r.status).toBeLessThan(500);
    expect([415, 400]).toContain(r.status);
    expectProblem(r, r.status, r.status === 415 ? 'unsupported_media_type' : 'validation_failed');
    expect(await snapshot()).toEqual(before);
  });

  const media: Case[] = [
    { name: 'POST /v1/transfers as application/xml', req: () => post('/v1/transfers', undefined, { rawBody: '<transfer amount="10"/>', headers: { 'content-type': 'application/xml' } }), status: 415, code: 'unsupported_media_type' },
    { name: 'POST /v1/deposits as a form', req: () => post('/v1/deposits', undefined, { rawBody: `accountId=${a1}&amount=10&currency=USD`, headers: { 'content-type': 'application/x-www-form-urlencoded' } }), status: 415, code: 'unsupported_media_type' },
    { name: 'POST /v1/accounts as application/octet-stream', req: () => post('/v1/accounts', undefined, { rawBody: '{"currency":"USD"}', headers: { 'content-type': 'application/octet-stream' } }), status: 415, code: 'unsupported_media_type' },
  ];
  it.each(media)('$name -> $status $code', async (c) => { await expectRejected(c); });
});

describe('poisoned JSON: prototype keys, characters PostgreSQL refuses, pathological nesting', () => {
  const proto: [string, () => Req][] = [
    ['a top-level "__proto__"', () => post('/v1/deposits', undefined, { rawBody: `{"accountId":"${a1}","amount":"10","currency":"USD","__proto__":{"polluted":true}}` })],
    ['"__proto__" inside metadata', () => post('/v1/deposits', undefined, { rawBody: `{"accountId":"${a1}","amount":"10","currency":"USD","metadata":{"__proto__":{"polluted":true}}}` })],
    ['"constructor.prototype" inside metadata', () => post('/v1/accounts', undefined, { rawBody: '{"currency":"USD","metadata":{"constructor":{"prototype":{"polluted":true}}}}' })],
  ];
  it.each(proto)('%s -> 400 (malformed_json or validation_failed), nothing written, no prototype polluted', async (_n, req) => {
    const before = await snapshot();
    const r = await call(req());
    expect(r.status).toBe(400);
    expectProblem(r, 400, ['malformed_json', 'validation_failed'].includes(r.body?.code) ? r.body.code : 'malformed_json');
    expect(await snapshot()).toEqual(before);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  const nested = (n: number) => `${'['.repeat(n)}1${']'.repeat(n)}`;
  const poison: Case[] = [
    { name: 'deposit: metadata value with a NUL character', req: () => post('/v1/deposits', depBody({ metadata: { note: 'a\u0000b' } })), status: 400, code: 'validation_failed' },
    { name: 'deposit: metadata key with a NUL character', req: () => post('/v1/deposits', depBody({ metadata: { 'a\u0000': 'b' } })), status: 400, code: 'validation_failed' },
    { name: 'deposit: metadata with a lone UTF-16 surrogate', req: () => post('/v1/deposits', undefined, { rawBody: `{"accountId":"${a1}","amount":"10","currency":"USD","metadata":{"note":"\\ud800"}}` }), status: 400, code: 'validation_failed' },
    { name: 'transfer: metadata value with a NUL character', req: () => post('/v1/transfers', trBody({ metadata: { note: '\u0000' } })), status: 400, code: 'validation_failed' },
    { name: 'account: metadata value with a NUL character', req: () => post('/v1/accounts', accBody({ metadata: { note: '\u0000' } })), status: 400, code: 'validation_failed' },
    { name: 'tenant (admin): name with a NUL character', req: () => post('/v1/tenants', { name: 'a\u0000b' }, { key: t.adminKey }), status: 400, code: 'validation_failed' },
    { name: 'tenant (admin): name with a lone UTF-16 surrogate', req: () => post('/v1/tenants', undefined, { key: t.adminKey, rawBody: '{"name":"x\\ud800y"}' }), status: 400, code: 'validation_failed' },
    { name: 'deposit: metadata nested 5,000 arrays deep (under 64 KiB)', req: () => post('/v1/deposits', undefined, { rawBody: `{"accountId":"${a1}","amount":"10","currency":"USD","metadata":{"d":${nested(5_000)}}}` }), status: 400, code: 'validation_failed' },
    { name: 'account: metadata nested 20,000 arrays deep (under 64 KiB)', req: () => post('/v1/accounts', undefined, { rawBody: `{"currency":"USD","metadata":{"d":${nested(20_000)}}}` }), status: 400, code: 'validation_failed' },
  ];
  it.each(poison)('$name -> $status $code', async (c) => { await expectRejected(c); });

  it("one tenant's poisoned deposit does not fail other tenants' deposits batched with it", async () => {
    const a3 = await t.account(A.key, 'USD');
    const before = (await t.call('GET', `/v1/accounts/${b2}`, { key: B.key })).body.balance as string;
    const legit = Array.from({ length: 20 }, () => t.call('POST', '/v1/deposits', { key: B.key, idem: idem(), body: { accountId: b2, amount: '1', currency: 'USD' } }));
    const poisoned = t.call('POST', '/v1/deposits', { key: A.key, idem: idem(), body: depBody({ accountId: a3, amount: '1', metadata: { note: 'x\u0000' } }) });
    const [bad, ...good] = await Promise.all([poisoned, ...legit]);
    // Tenant B's deposits were valid: each is applied, whatever tenant A sent beside them.
    expect.soft(good.map((r) => `${r.status} ${r.body.code ?? r.body.state}`)).toEqual(good.map(() => '201 settled'));
    expect.soft((await t.call('GET', `/v1/accounts/${b2}`, { key: B.key })).body.balance).toBe(String(BigInt(before) + 20n));
    expect(bad!.status, JSON.stringify(bad!.body)).toBeLessThan(500);
  });
});

describe('after all of it', () => {
  it('every balance is what the setup left and no tenant or key was added', async () => {
    const s = await snapshot();
    expect(s.api[a1]).toBe('200 open 1000 1000');
    expect(s.api[a2]).toBe('200 open 0 0');
    expect(s.api[aEur]).toBe('200 open 500 500');
    expect(s.api[b1]).toBe('200 open 777100 777100');
    expect(s.counts.tenants).toBe('2');
    // The admin key and one key per tenant.
    expect(s.counts.api_keys).toBe('3');
  });
});
