// The OpenAPI document at /docs/json answers for the API: it is valid OpenAPI 3, names every
// operation, and lists every status a route answers. Each documented route is driven through its
// failure kinds (no key, the wrong key, bad ids and bodies, reused Idempotency-Keys, business
// refusals, a tenant limited to 1/s) and every answer is compared with the document.
import { Metrics } from '../src/observability/metrics.ts';
import Fastify from 'fastify';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { webhookRepositories } from '../src/persistence/webhooks.ts';
import { makeDeliveryId } from '../src/webhooks/ids.ts';
import { buildApp } from '../src/http/app.ts';
import { documentRoute } from '../src/http/openapi.ts';
import { rootLogger } from '../src/node.ts';
import { ERRORS } from '../src/http/errors.ts';
import { problemSchema } from '../src/http/schemas.ts';
import type { AccountId, TenantId, TransferId } from '../src/domain/ids.ts';
import { makeTransferId, regionOf } from '../src/domain/ids.ts';

// ---------------------------------------------------------------------------------------------
// The document, and the comparison of answers with it

interface SpecResponse { description: string; content?: Record<string, { schema: { $ref?: string } }>; headers?: Record<string, unknown> }
interface SpecOperation {
  operationId?: string; summary?: string; tags?: string[]; security?: unknown[];
  parameters?: { in: string; name: string }[]; responses: Record<string, SpecResponse>;
}
interface Spec {
  openapi: string; servers?: { url: string }[]; tags?: { name: string }[];
  paths: Record<string, Record<string, SpecOperation>>;
}

/** One answer of the server to a request on the operation `op` ("POST /v1/holds/{id}/capture"). */
interface Observed { op: string; probe: string; status: number; contentType: string | undefined; headers: Record<string, unknown>; hasBody: boolean }

const operations = (spec: Spec): Map<string, SpecOperation> =>
  new Map(Object.entries(spec.paths).flatMap(([path, item]) => Object.entries(item).map(([method, o]) => [`${method.toUpperCase()} ${path}`, o] as const)));

/** What in `observed` the document does not say: an unknown route, status, media type or header. Empty when it says everything. */
function undocumented(spec: Spec, observed: Observed[]): string[] {
  const ops = operations(spec);
  const out: string[] = [];
  for (const o of observed) {
    const op = ops.get(o.op);
    if (!op) { out.push(`${o.op} (${o.probe}): not in the document`); continue; }
    const res = op.responses[String(o.status)];
    if (!res) { out.push(`${o.op} (${o.probe}): answered ${o.status}, documented ${Object.keys(op.responses).join(', ')}`); continue; }
    const media = o.contentType?.split(';')[0]!.trim();
    if (o.hasBody && !(media && res.content && media in res.content)) {
      out.push(`${o.op} (${o.probe}): answered ${o.status} as ${media}, documented as ${Object.keys(res.content ?? {}).join(', ') || 'no body'}`);
    }
    for (const h of Object.keys(res.headers ?? {})) {
      if (o.headers[h] === undefined) out.push(`${o.op} (${o.probe}): answered ${o.status} without the documented header ${h}`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The node, its fixtures, and a plan per documented operation

let t: TestNode;
let spec: Spec;
let A: { id: string; key: string };
/** A tenant whose limits are set to 1 read and 1 write a second. */
let T: { id: string; key: string };
const ids: Record<string, string> = {};

interface Req { url: string; body?: unknown }
interface Plan {
  as: 'admin' | 'tenant' | 'public';
  idem?: 'required' | 'optional';
  /** The real resource of a route with an {id}. */
  id?: () => string;
  /** A request that succeeds, on resource `id`. */
  valid: (id: string) => Req;
  /** Another request, sent under valid's Idempotency-Key: 422 idempotency_key_reused. */
  other?: () => Req;
  /** Failures of this route alone, each with the status it answers. */
  refusals?: [name: string, req: () => Req, status: number][];
}

const transfer = (over: Record<string, unknown> = {}) => ({ sourceAccountId: ids.a1, destinationAccountId: ids.a2, amount: '1', currency: 'USD', ...over });
const money = (over: Record<string, unknown> = {}) => ({ accountId: ids.a1, amount: '1', currency: 'USD', ...over });

const PLANS: Record<string, Plan> = {
  'GET /healthz': { as: 'public', valid: () => ({ url: '/healthz' }) },
  'GET /readyz': { as: 'public', valid: () => ({ url: '/readyz' }) },
  'GET /metrics': { as: 'public', valid: () => ({ url: '/metrics' }) },
  'GET /docs/json': { as: 'public', valid: () => ({ url: '/docs/json' }) },

  'POST /v1/tenants': {
    as: 'admin', idem: 'required', valid: () => ({ url: '/v1/tenants', body: { name: 'probe' } }), other: () => ({ url: '/v1/tenants', body: { name: 'probe-other' } }),
    refusals: [['an empty name', () => ({ url: '/v1/tenants', body: { name: '' } }), 400]],
  },
  'GET /v1/tenants': { as: 'admin', valid: () => ({ url: '/v1/tenants' }) },
  'POST /v1/tenants/{id}/keys': {
    as: 'admin', idem: 'required', id: () => A.id, valid: (id) => ({ url: `/v1/tenants/${id}/keys` }), other: () => ({ url: `/v1/tenants/${T.id}/keys` }),
  },
  'DELETE /v1/tenants/{id}/keys/{keyId}': {
    as: 'admin', id: () => A.id, valid: (id) => ({ url: `/v1/tenants/${id}/keys/${ids.revocable}` }),
    refusals: [['an unknown key', () => ({ url: `/v1/tenants/${A.id}/keys/key_nonexistent` }), 404]],
  },
  'PUT /v1/tenants/{id}/limits': {
    as: 'admin', id: () => A.id, valid: (id) => ({ url: `/v1/tenants/${id}/limits`, body: { readsPerS: null, writesPerS: null } }),
    refusals: [['a limit of 0', () => ({ url: `/v1/tenants/${A.id}/limits`, body: { readsPerS: 0, writesPerS: null } }), 400]],
  },
  'GET /v1/tenants/{id}/limits': { as: 'admin', id: () => A.id, valid: (id) => ({ url: `/v1/tenants/${id}/limits` }) },
  'GET /v1/cluster': { as: 'admin', valid: () => ({ url: '/v1/cluster' }) },
  'GET /v1/ops': { as: 'admin', valid: () => ({ url: '/v1/ops' }) },
  'GET /v1/actors/accounts/{id}': { as: 'admin', id: () => ids.a1!, valid: (id) => ({ url: `/v1/actors/accounts/${id}` }) },
  'GET /v1/suspense': { as: 'admin', valid: () => ({ url: '/v1/suspense' }) },
  'POST /v1/suspense/{id}/payouts': {
    as: 'admin', idem: 'required', id: () => ids.suspense!, valid: (id) => ({ url: `/v1/suspense/${id}/payouts`, body: { destinationAccountId: ids.a2, amount: '1' } }),
    other: () => ({ url: `/v1/suspense/${ids.suspense}/payouts`, body: { destinationAccountId: ids.a2, amount: '2' } }),
    refusals: [
      ['more than is in suspense', () => ({ url: `/v1/suspense/${ids.suspense}/payouts`, body: { destinationAccountId: ids.a2, amount: '1000000' } }), 422],
      ['an account of another currency', () => ({ url: `/v1/suspense/${ids.suspense}/payouts`, body: { destinationAccountId: ids.eur, amount: '1' } }), 422],
      ['an unknown destination', () => ({ url: `/v1/suspense/${ids.suspense}/payouts`, body: { destinationAccountId: 'nonexistent' } }), 404],
    ],
  },

  'POST /v1/accounts': {
    as: 'tenant', idem: 'required', valid: () => ({ url: '/v1/accounts', body: { currency: 'USD' } }), other: () => ({ url: '/v1/accounts', body: { currency: 'EUR' } }),
    refusals: [
      ['an unknown currency', () => ({ url: '/v1/accounts', body: { currency: 'XXX' } }), 400],
      ['a bad region', () => ({ url: '/v1/accounts', body: { currency: 'USD', region: '!!' } }), 400],
      ['a negative overdraft', () => ({ url: '/v1/accounts', body: { currency: 'USD', overdraftLimit: '-1' } }), 400],
    ],
  },
  'GET /v1/accounts/{id}': { as: 'tenant', id: () => ids.a1!, valid: (id) => ({ url: `/v1/accounts/${id}` }) },
  'POST /v1/accounts/{id}/freeze': {
    as: 'tenant', idem: 'optional', id: () => ids.status!, valid: (id) => ({ url: `/v1/accounts/${id}/freeze` }), other: () => ({ url: `/v1/accounts/${ids.status2}/freeze` }),
    refusals: [['a closed account', () => ({ url: `/v1/accounts/${ids.closed}/freeze` }), 422]],
  },
  'POST /v1/accounts/{id}/unfreeze': {
    as: 'tenant', idem: 'optional', id: () => ids.status!, valid: (id) => ({ url: `/v1/accounts/${id}/unfreeze` }), other: () => ({ url: `/v1/accounts/${ids.status2}/unfreeze` }),
    refusals: [['a closed account', () => ({ url: `/v1/accounts/${ids.closed}/unfreeze` }), 422]],
  },
  'POST /v1/accounts/{id}/close': {
    as: 'tenant', idem: 'optional', id: () => ids.toClose!, valid: (id) => ({ url: `/v1/accounts/${id}/close` }), other: () => ({ url: `/v1/accounts/${ids.toClose2}/close` }),
    refusals: [
      ['a balance', () => ({ url: `/v1/accounts/${ids.a1}/close` }), 422],
      ['an outstanding hold', () => ({ url: `/v1/accounts/${ids.held}/close` }), 422],
    ],
  },
  'GET /v1/accounts/{id}/statement': {
    as: 'tenant', id: () => ids.a1!, valid: (id) => ({ url: `/v1/accounts/${id}/statement` }),
    refusals: [['a bad limit', () => ({ url: `/v1/accounts/${ids.a1}/statement?limit=abc` }), 400]],
  },
  'GET /v1/accounts/{id}/events': {
    as: 'tenant', id: () => ids.a1!, valid: (id) => ({ url: `/v1/accounts/${id}/events` }),
    refusals: [
      ['an event id of another account', () => ({ url: `/v1/accounts/${ids.a1}/events?after=${ids.a2}.1` }), 400],
      ['a limit over 1000', () => ({ url: `/v1/accounts/${ids.a1}/events?limit=1001` }), 400],
    ],
  },
  'GET /v1/events': {
    as: 'tenant', valid: () => ({ url: '/v1/events' }),
    refusals: [
      ['a cursor not from the feed', () => ({ url: '/v1/events?after=bm90LWEtY3Vyc29y' }), 400],
      ['a limit of 0', () => ({ url: '/v1/events?limit=0' }), 400],
    ],
  },

  'POST /v1/webhook-endpoints': {
    as: 'tenant', idem: 'required', valid: () => ({ url: '/v1/webhook-endpoints', body: { url: 'https://example.com/a' } }),
    other: () => ({ url: '/v1/webhook-endpoints', body: { url: 'https://example.com/b' } }),
    refusals: [['a loopback URL', () => ({ url: '/v1/webhook-endpoints', body: { url: 'https://127.0.0.1/hook' } }), 400]],
  },
  'GET /v1/webhook-endpoints': { as: 'tenant', valid: () => ({ url: '/v1/webhook-endpoints' }) },
  'GET /v1/webhook-endpoints/{id}': { as: 'tenant', id: () => ids.hook!, valid: (id) => ({ url: `/v1/webhook-endpoints/${id}` }) },
  'DELETE /v1/webhook-endpoints/{id}': {
    as: 'tenant', id: () => ids.hookToDelete!, valid: (id) => ({ url: `/v1/webhook-endpoints/${id}` }),
    refusals: [['an unknown endpoint', () => ({ url: '/v1/webhook-endpoints/we_nonexistent' }), 404]],
  },
  'POST /v1/webhook-endpoints/{id}/rotate-secret': {
    as: 'tenant', idem: 'required', id: () => ids.hook!, valid: (id) => ({ url: `/v1/webhook-endpoints/${id}/rotate-secret` }),
    other: () => ({ url: `/v1/webhook-endpoints/${ids.hookToDelete}/rotate-secret` }),
    refusals: [['an unknown endpoint', () => ({ url: '/v1/webhook-endpoints/we_nonexistent/rotate-secret' }), 404]],
  },
  'GET /v1/webhook-endpoints/{id}/deliveries': { as: 'tenant', id: () => ids.hook!, valid: (id) => ({ url: `/v1/webhook-endpoints/${id}/deliveries` }) },
  'POST /v1/webhook-endpoints/{id}/deliveries/{deliveryId}/redeliver': {
    as: 'tenant', idem: 'required', id: () => ids.hook!, valid: (id) => ({ url: `/v1/webhook-endpoints/${id}/deliveries/${ids.delivery}/redeliver` }),
    refusals: [['an unknown delivery', () => ({ url: `/v1/webhook-endpoints/${ids.hook}/deliveries/msg_nonexistent/redeliver` }), 404]],
  },

  'POST /v1/deposits': {
    as: 'tenant', idem: 'required', valid: () => ({ url: '/v1/deposits', body: money() }), other: () => ({ url: '/v1/deposits', body: money({ amount: '2' }) }),
    refusals: [
      ['another currency', () => ({ url: '/v1/deposits', body: money({ currency: 'EUR' }) }), 422],
      ['an amount of 0', () => ({ url: '/v1/deposits', body: money({ amount: '0' }) }), 400],
      ['an amount as a number', () => ({ url: '/v1/deposits', body: money({ amount: 5 }) }), 400],
      ['an unknown account', () => ({ url: '/v1/deposits', body: money({ accountId: 'nonexistent' }) }), 404],
    ],
  },
  'POST /v1/withdrawals': {
    as: 'tenant', idem: 'required', valid: () => ({ url: '/v1/withdrawals', body: money() }), other: () => ({ url: '/v1/withdrawals', body: money({ amount: '2' }) }),
    refusals: [
      ['insufficient funds', () => ({ url: '/v1/withdrawals', body: money({ accountId: ids.a2, amount: '1000000' }) }), 422],
      ['a frozen account', () => ({ url: '/v1/withdrawals', body: money({ accountId: ids.frozen }) }), 422],
    ],
  },
  'POST /v1/transfers': {
    as: 'tenant', idem: 'required', valid: () => ({ url: '/v1/transfers', body: transfer() }), other: () => ({ url: '/v1/transfers', body: transfer({ amount: '2' }) }),
    refusals: [
      ['insufficient funds', () => ({ url: '/v1/transfers', body: transfer({ sourceAccountId: ids.a2, destinationAccountId: ids.a1, amount: '1000000' }) }), 422],
      ['the same account', () => ({ url: '/v1/transfers', body: transfer({ destinationAccountId: ids.a1 }) }), 422],
      ['another currency', () => ({ url: '/v1/transfers', body: transfer({ destinationAccountId: ids.eur }) }), 422],
      ['an unknown destination', () => ({ url: '/v1/transfers', body: transfer({ destinationAccountId: 'nonexistent' }) }), 404],
    ],
  },
  'GET /v1/transfers/{id}': { as: 'tenant', id: () => ids.tr!, valid: (id) => ({ url: `/v1/transfers/${id}` }) },
  'POST /v1/transfers/{id}/refunds': {
    as: 'tenant', idem: 'required', id: () => ids.tr!, valid: (id) => ({ url: `/v1/transfers/${id}/refunds`, body: { amount: '1' } }),
    other: () => ({ url: `/v1/transfers/${ids.tr}/refunds`, body: { amount: '2' } }),
    refusals: [
      ['more than the transfer', () => ({ url: `/v1/transfers/${ids.tr}/refunds`, body: { amount: '1000000' } }), 422],
      ['a refund of a refund', () => ({ url: `/v1/transfers/${ids.refund}/refunds`, body: {} }), 422],
    ],
  },
  'POST /v1/transfers/batch': {
    as: 'tenant', idem: 'required', valid: () => ({ url: '/v1/transfers/batch', body: { items: [transfer()] } }),
    other: () => ({ url: '/v1/transfers/batch', body: { items: [transfer({ amount: '2' })] } }),
    refusals: [
      ['no items', () => ({ url: '/v1/transfers/batch', body: { items: [] } }), 400],
      ['an amount as a number', () => ({ url: '/v1/transfers/batch', body: { items: [transfer({ amount: 5 })] } }), 400],
    ],
  },

  'POST /v1/holds': {
    as: 'tenant', idem: 'required', valid: () => ({ url: '/v1/holds', body: transfer() }), other: () => ({ url: '/v1/holds', body: transfer({ amount: '2' }) }),
    refusals: [
      ['insufficient funds', () => ({ url: '/v1/holds', body: transfer({ sourceAccountId: ids.a2, destinationAccountId: ids.a1, amount: '1000000' }) }), 422],
      ['an expiry past the maximum', () => ({ url: '/v1/holds', body: transfer({ expiresInSeconds: 1_000_000_000 }) }), 400],
      ['the same account', () => ({ url: '/v1/holds', body: transfer({ destinationAccountId: ids.a1 }) }), 422],
    ],
  },
  'GET /v1/holds/{id}': { as: 'tenant', id: () => ids.hold!, valid: (id) => ({ url: `/v1/holds/${id}` }) },
  'POST /v1/holds/{id}/capture': {
    as: 'tenant', idem: 'required', id: () => ids.toCapture!, valid: (id) => ({ url: `/v1/holds/${id}/capture`, body: { amount: '1' } }),
    other: () => ({ url: `/v1/holds/${ids.toCapture}/capture`, body: { amount: '2' } }),
    refusals: [
      ['more than the hold', () => ({ url: `/v1/holds/${ids.hold}/capture`, body: { amount: '6' } }), 422],
      ['a voided hold', () => ({ url: `/v1/holds/${ids.voided}/capture`, body: {} }), 409],
    ],
  },
  'POST /v1/holds/{id}/void': {
    as: 'tenant', idem: 'optional', id: () => ids.toVoid!, valid: (id) => ({ url: `/v1/holds/${id}/void` }), other: () => ({ url: `/v1/holds/${ids.hold}/void` }),
    refusals: [['a voided hold', () => ({ url: `/v1/holds/${ids.voided}/void` }), 409]],
  },
};

async function ok(r: Promise<{ status: number; body: any }>, what: string): Promise<any> {
  const res = await r;
  if (res.status >= 300) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Accounts, a transfer, a refund and holds in every state the plans need, all of tenant A. */
async function fixtures(): Promise<void> {
  const post = (url: string, body?: unknown) => ok(t.call('POST', url, { key: A.key, idem: idem(), ...(body === undefined ? {} : { body }) }), url);
  for (const name of ['a1', 'a2', 'frozen', 'closed', 'status', 'status2', 'toClose', 'toClose2']) ids[name] = await t.account(A.key);
  ids.revocable = (await ok(t.call('POST', `/v1/tenants/${A.id}/keys`, { key: t.adminKey, idem: idem() }), 'a key to revoke')).id;
  ids.eur = await t.account(A.key, 'EUR');
  ids.held = await t.account(A.key, 'USD', { overdraftLimit: '100' });
  expect((await t.deposit(A.key, ids.a1!, '1000')).status).toBe(201);
  await post(`/v1/accounts/${ids.frozen}/freeze`);
  await post(`/v1/accounts/${ids.closed}/close`);
  ids.tr = (await post('/v1/transfers', transfer({ amount: '100' }))).id;
  ids.refund = (await post(`/v1/transfers/${ids.tr}/refunds`, { amount: '1' })).id;
  await post('/v1/holds', transfer({ sourceAccountId: ids.held, amount: '50' }));
  for (const name of ['hold', 'toCapture', 'toVoid', 'voided']) ids[name] = (await post('/v1/holds', transfer({ amount: '5' }))).id;
  await post(`/v1/holds/${ids.voided}/void`);
  await suspenseFixture();
}

/**
 * Money in suspense: an account sends 10 to a closed one and closes itself before the refusal
 * brings the money back (its mailbox takes the debit, then the close), so the return goes on to
 * A's suspense account.
 */
async function suspenseFixture(): Promise<void> {
  const [src, closedDst] = [await t.account(A.key), await t.account(A.key)];
  expect((await t.deposit(A.key, src, '10')).status).toBe(201);
  await ok(t.call('POST', `/v1/accounts/${closedDst}/close`, { key: A.key }), 'close');
  const transferId: TransferId = makeTransferId(regionOf(src as AccountId), '5'.repeat(32));
  await Promise.all([
    t.node.registry.send(src as AccountId, {
      cmd: { type: 'Debit', transferId, amount: 10n, currency: 'USD' },
      idem: { tenantId: A.id, key: idem(), requestHash: 'openapi-suspense', resourceId: transferId, onOk: null },
      transfer: { destinationId: closedDst as AccountId, kind: 'transfer', tenantId: A.id as TenantId, metadata: null },
    }),
    t.node.registry.send(src as AccountId, { cmd: { type: 'Close' } }),
  ]);
  for (let i = 0; i < 200 && !ids.suspense; i++) {
    const listed = await ok(t.call('GET', '/v1/suspense', { key: t.adminKey }), 'suspense');
    const found = (listed.data as { accountId: string; tenantId: string; balance: string }[]).find((s) => s.tenantId === A.id && s.balance === '10');
    if (found) ids.suspense = found.accountId;
    else await new Promise((r) => setTimeout(r, 50));
  }
  expect(ids.suspense, 'money in suspense for the payout probes').toBeDefined();
  // Webhook endpoints, and a delivery on one of them (what an event would make) to redeliver.
  const hook = await ok(t.call('POST', '/v1/webhook-endpoints', { key: A.key, idem: idem(), body: { url: 'https://example.com/hook' } }), 'webhook endpoint');
  ids.hook = hook.id as string;
  ids.hookToDelete = (await ok(t.call('POST', '/v1/webhook-endpoints', { key: A.key, idem: idem(), body: { url: 'https://example.com/gone' } }), 'webhook endpoint')).id as string;
  const delivery = await webhookRepositories(t.node.pool).deliveries.enqueue({
    id: makeDeliveryId(Date.now()), endpointId: ids.hook, eventId: 'evt-openapi', eventType: 'transfer.settled', accountId: null, seq: null, payload: {}, now: new Date(),
  });
  ids.delivery = delivery.delivery.id;
}

beforeAll(async () => {
  t = await startTestNode('openapi');
  A = await t.tenant('openapi-a');
  T = await t.tenant('openapi-throttled');
  await fixtures();
  const r = await t.call('GET', '/docs/json');
  expect(r.status).toBe(200);
  spec = r.body as Spec;
});
afterAll(async () => { await t?.close(); });

// ---------------------------------------------------------------------------------------------
// Driving every operation

interface Call { method: string; url: string; auth?: string | undefined; idem?: string | undefined; body?: unknown; rawBody?: string; contentType?: string }
/** The probes whose answer was not the one they aimed at (so a probe cannot silently miss its failure kind). */
const missed: string[] = [];
const observed: Observed[] = [];

async function probe(op: string, name: string, c: Call, expected: number | 'success' | undefined): Promise<number> {
  const r = await t.call(c.method, c.url, {
    ...(c.auth === undefined ? {} : { key: c.auth }), ...(c.idem === undefined ? {} : { idem: c.idem }),
    ...(c.body === undefined ? {} : { body: c.body }), ...(c.rawBody === undefined ? {} : { rawBody: c.rawBody }),
    ...(c.contentType === undefined ? {} : { headers: { 'content-type': c.contentType } }),
  });
  const raw = typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
  observed.push({ op, probe: name, status: r.status, contentType: r.headers['content-type'] as string | undefined, headers: r.headers, hasBody: raw.length > 0 });
  const hit = expected === undefined || (expected === 'success' ? r.status >= 200 && r.status < 300 : r.status === expected);
  if (!hit) missed.push(`${op} (${name}): expected ${expected}, answered ${r.status} ${raw.slice(0, 200)}`);
  return r.status;
}

const authOf = (plan: Plan, as: 'self' | 'other'): string | undefined => {
  if (plan.as === 'public') return undefined;
  return (plan.as === 'admin') === (as === 'self') ? t.adminKey : A.key;
};

/** Every failure kind of one operation, each with the status it must answer. */
async function drive(op: string, plan: Plan): Promise<void> {
  const [method, path] = op.split(' ') as [string, string];
  // fastify reads the body of every method but GET (and HEAD).
  const hasBody = method !== 'GET';
  const auth = authOf(plan, 'self');
  const base = (req: Req, over: Partial<Call> = {}): Call => ({ method, ...req, auth, idem: plan.idem ? idem() : undefined, ...over });
  const id = plan.id?.() ?? '';

  const first = base(plan.valid(id));
  await probe(op, 'valid', first, 'success');
  if (plan.idem) {
    await probe(op, 'replayed', first, 'success');
    if (plan.other) await probe(op, 'reused key', base(plan.other(), { idem: first.idem }), 422);
    await probe(op, 'malformed key', base(plan.valid(id), { idem: 'has space' }), 400);
  }
  if (plan.idem === 'required') await probe(op, 'no Idempotency-Key', base(plan.valid(id), { idem: undefined }), 400);
  if (plan.as !== 'public') {
    await probe(op, 'no key', base(plan.valid(id), { auth: undefined }), 401);
    await probe(op, 'unknown key', base(plan.valid(id), { auth: 'gp_tenant_unknown' }), 401);
    await probe(op, 'the other kind of key', base(plan.valid(id), { auth: authOf(plan, 'other') }), 403);
  }
  if (path.includes('{id}')) {
    await probe(op, 'unknown id', base(plan.valid('nonexistent')), 404);
    await probe(op, 'id of 81 characters', base(plan.valid('x'.repeat(81))), 400);
  }
  if (hasBody) {
    await probe(op, 'malformed JSON', base(plan.valid(id), { rawBody: '{"a":' }), 400);
    await probe(op, 'text/plain body', base(plan.valid(id), { rawBody: 'hello', contentType: 'text/plain' }), 415);
    const limit = Math.max(t.cfg.bodyLimitBytes, t.cfg.batchMaxItems * 1_024);
    await probe(op, 'body over the limit', base(plan.valid(id), { rawBody: JSON.stringify({ pad: 'x'.repeat(limit) }) }), 413);
  } else {
    // A GET's body is never read: no 413 or 415 there.
    await probe(op, 'GET with a text body', base(plan.valid(id), { rawBody: 'x'.repeat(100_000), contentType: 'text/plain' }), 'success');
  }
  for (const [name, req, status] of plan.refusals ?? []) await probe(op, name, base(req()), status);
}

/** Tenant T at 1 request a second: of three quick requests at least one is refused with 429. */
async function throttle(op: string, plan: Plan): Promise<void> {
  const [method] = op.split(' ') as [string];
  const req = plan.valid(plan.id?.() ?? '');
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) statuses.push(await probe(op, `throttled ${i + 1}`, { method, ...req, auth: T.key, idem: plan.idem ? idem() : undefined }, undefined));
  if (!statuses.includes(429)) missed.push(`${op}: three requests at 1/s answered ${statuses.join(', ')}, no 429`);
}

// ---------------------------------------------------------------------------------------------

describe('the document', () => {
  it('is valid OpenAPI 3 (and the validator does refuse a broken one)', async () => {
    const validator = new Validator();
    const res = await validator.validate(structuredClone(spec) as never);
    expect(res.errors, String(JSON.stringify(res.errors)).slice(0, 2_000)).toBeUndefined();
    expect(res.valid).toBe(true);
    expect(validator.version).toMatch(/^3\./);
    expect(() => validator.resolveRefs()).not.toThrow();

    const broken = structuredClone(spec);
    delete (broken.paths['/v1/transfers']!.post!.responses['422'] as Partial<SpecResponse>).description;
    expect((await new Validator().validate(broken as never)).valid).toBe(false);
  });

  it('names every operation once, with a summary and one declared tag, and has servers', () => {
    expect(spec.servers).toEqual([{ url: '/', description: 'This node' }]);
    const tags = new Set((spec.tags ?? []).map((x) => x.name));
    const seen = new Set<string>();
    for (const [key, op] of operations(spec)) {
      expect(op.operationId, key).toMatch(/^[a-z][A-Za-z]+$/);
      expect(seen.has(op.operationId!), `${key}: operationId ${op.operationId} twice`).toBe(false);
      seen.add(op.operationId!);
      expect(op.summary, key).toBeTruthy();
      expect(op.tags, key).toHaveLength(1);
      expect(tags.has(op.tags![0]!), `${key}: tag ${op.tags![0]} not declared`).toBe(true);
    }
  });

  it('documents health, readiness, metrics and itself without a key, and hides the node-to-node routes', () => {
    const ops = operations(spec);
    for (const key of ['GET /healthz', 'GET /readyz', 'GET /metrics', 'GET /docs/json']) {
      expect(ops.get(key)?.security, key).toEqual([]);
    }
    expect(Object.keys(ops.get('GET /readyz')!.responses).sort()).toEqual(['200', '500', '503']);
    expect(ops.get('GET /readyz')!.responses['503']!.headers).toHaveProperty('retry-after');
    expect(Object.keys(ops.get('GET /metrics')!.responses['200']!.content!)).toEqual(['text/plain']);
    expect(Object.keys(spec.paths).filter((p) => p.startsWith('/internal') || p === '/docs/yaml')).toEqual([]);
  });

  it('gives every error its own status as problem+json, names the codes behind it, and Retry-After on 429 and 503', () => {
    for (const [key, op] of operations(spec)) {
      expect(Object.keys(op.responses).filter((s) => !/^[1-5][0-9]{2}$/.test(s)), `${key}: wildcards`).toEqual([]);
      for (const [status, res] of Object.entries(op.responses).filter(([s]) => Number(s) >= 400)) {
        const where = `${key} ${status}`;
        expect(Object.keys(res.content ?? {}), where).toEqual(['application/problem+json']);
        expect(res.content!['application/problem+json']!.schema.$ref, where).toBe('#/components/schemas/Problem');
        const codes = [...res.description.matchAll(/`([a-z_]+)`:/g)].map((m) => m[1]!);
        expect(codes.length, `${where}: codes in the description`).toBeGreaterThan(0);
        for (const code of codes) expect(ERRORS[code as keyof typeof ERRORS]?.status, `${where}: ${code}`).toBe(Number(status));
        expect(res.headers?.['retry-after'] !== undefined, `${where}: Retry-After`).toBe(status === '429' || status === '503');
      }
      if (key.includes(' /v1/')) {
        for (const status of ['401', '429', '500', '503']) expect(op.responses, `${key}: ${status}`).toHaveProperty(status);
        if (key.startsWith('GET ')) for (const status of ['413', '415']) expect(op.responses, `${key}: ${status}`).not.toHaveProperty(status);
      }
    }
  });
});

describe('every answer is documented', () => {
  it('drives each documented operation through its failure kinds; each answers what it should, and the document lists it', async () => {
    const ops = [...operations(spec).keys()].sort();
    // Every documented route has a plan here, and every plan a documented route.
    expect(ops).toEqual(Object.keys(PLANS).sort());
    for (const op of ops) await drive(op, PLANS[op]!);

    await ok(t.call('PUT', `/v1/tenants/${T.id}/limits`, { key: t.adminKey, body: { readsPerS: 1, writesPerS: 1 } }), 'limits of T');
    for (const op of ops.filter((o) => PLANS[o]!.as === 'tenant')) await throttle(op, PLANS[op]!);

    expect(missed).toEqual([]);
    expect(undocumented(spec, observed)).toEqual([]);
    // The statuses driven: every documented one but 500 and 503, which take a bug or an outage.
    expect([...new Set(observed.map((o) => o.status))]).toEqual(expect.arrayContaining([200, 201, 400, 401, 403, 404, 409, 413, 415, 422, 429]));
  });

  it('/readyz answers 503 with Retry-After while draining and while the database is down, as documented', async () => {
    const down = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    const cases = [
      { probe: 'draining', ready: () => false, payments: t.node.payments, code: 'draining' },
      { probe: 'database down', ready: () => true, payments: { ...t.node.payments, ping: async () => { throw down; } }, code: 'database_unavailable' },
    ];
    for (const c of cases) {
      const app = await buildApp({ config: t.cfg, logger: rootLogger(t.cfg), payments: c.payments, ready: c.ready, metrics: new Metrics({ node: 'probe', region: 'eu' }) }, { root: [], api: [] });
      try {
        const r = await app.inject({ method: 'GET', url: '/readyz' });
        expect(r.statusCode, r.body).toBe(503);
        expect(r.json()).toMatchObject({ code: c.code, status: 503 });
        const seen: Observed = { op: 'GET /readyz', probe: c.probe, status: r.statusCode, contentType: String(r.headers['content-type']), headers: r.headers, hasBody: true };
        expect(undocumented((await app.inject({ method: 'GET', url: '/docs/json' })).json() as Spec, [seen])).toEqual([]);
        expect(undocumented(spec, [seen])).toEqual([]);
      } finally {
        await app.close();
      }
    }
  });

  it('the comparison flags what the document does not say', () => {
    const throttled = observed.find((o) => o.op === 'POST /v1/transfers' && o.status === 429);
    expect(throttled).toBeDefined();
    expect(undocumented(spec, [throttled!])).toEqual([]);

    const without429 = structuredClone(spec);
    delete without429.paths['/v1/transfers']!.post!.responses['429'];
    expect(undocumented(without429, [throttled!])).toEqual([expect.stringMatching(/^POST \/v1\/transfers \(throttled \d\): answered 429, documented 201, 202, 400/)]);

    expect(undocumented(spec, [
      { ...throttled!, status: 418 },
      { ...throttled!, op: 'DELETE /v1/transfers' },
      { ...throttled!, contentType: 'application/json; charset=utf-8' },
      { ...throttled!, headers: {} },
    ])).toEqual([
      expect.stringMatching(/answered 418, documented/),
      expect.stringMatching(/^DELETE \/v1\/transfers .*not in the document/),
      expect.stringMatching(/answered 429 as application\/json, documented as application\/problem\+json/),
      expect.stringMatching(/without the documented header retry-after/),
    ]);
  });

  it('a /v1 route without an entry in the table stops the server from starting', async () => {
    const app = Fastify({ logger: false });
    app.addHook('onRoute', documentRoute);
    app.register(async (scope) => { scope.get('/v1/undocumented', async () => ({})); });
    await expect(app.ready()).rejects.toThrow(/GET \/v1\/undocumented has no entry in OPERATIONS/);
    await app.close();

    // A documented one is filled in: no wildcard left.
    const documented = Fastify({ logger: false });
    documented.addSchema(problemSchema);
    documented.addHook('onRoute', documentRoute);
    const routes: { schema?: { operationId?: string; response?: Record<string, unknown> } }[] = [];
    documented.addHook('onRoute', (r) => { routes.push(r as never); });
    documented.get('/v1/tenants', { schema: { response: { 200: { type: 'object' }, '4xx': { type: 'object' } } } }, async () => ({}));
    await documented.ready();
    expect(routes[0]!.schema!.operationId).toBe('listTenants');
    expect(Object.keys(routes[0]!.schema!.response!).sort()).toEqual(['200', '401', '403', '429', '500', '503']);
    await documented.close();
  });
});
