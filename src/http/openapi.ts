// The OpenAPI contract in one place: a table of every documented operation (operationId,
// summary, tag, the error codes only it answers) and the onRoute hook that writes it into each
// route's schema, so /docs/json lists every status a route can answer. Each status comes from
// its codes through statusOf; a /v1 route with no entry stops the server at startup.
import type { RouteOptions } from 'fastify';
import type { FastifyDynamicSwaggerOptions } from '@fastify/swagger';
import type { Config } from '../../config/settings.ts';
import type { ErrorCode } from '../domain/errors.ts';
import { ERRORS as CODES } from '../domain/errors.ts';
import { statusOf } from './errors.ts';

export type Tag = 'admin' | 'accounts' | 'money' | 'holds' | 'webhooks' | 'operations';

const TAGS: { name: Tag; description: string }[] = [
  { name: 'admin', description: 'Tenants, their keys and rate limits, inspection. The admin key only.' },
  { name: 'accounts', description: "A tenant's accounts. Tenant keys only." },
  { name: 'money', description: 'Deposits, withdrawals, transfers, refunds, batches. Tenant keys only.' },
  { name: 'holds', description: 'Two-phase payments: authorize, capture, void. Tenant keys only.' },
  { name: 'webhooks', description: 'Webhook endpoints (Standard Webhooks signatures), their secrets and deliveries. Tenant keys only.' },
  { name: 'operations', description: 'Health, readiness, metrics and this document. No key, no rate limit.' },
];

export interface Operation {
  operationId: string;
  summary: string;
  tag: Tag;
  /** The codes this route answers beyond those every route of its kind does (kindCodes). */
  codes: readonly ErrorCode[];
  /** Success responses, for a route whose schema is not ours to write (the UI plugin's). */
  success?: Record<string, object>;
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
export type OperationKey = `${Method} /${string}`;

// Groups of codes the table combines. Each says why a route that has it can answer them.
/**
 * Every /v1 route: no or an unknown key, a key that cannot be checked (the control database
 * down, the key not seen before), over the tenant's budget, the database down, our bug.
 */
const API: readonly ErrorCode[] = ['unauthorized', 'control_plane_unavailable', 'rate_limited', 'database_unavailable', 'internal_error'];
/** Every route whose method takes a body: fastify's parser, the body limit, the body's schema. */
const BODY: readonly ErrorCode[] = ['validation_failed', 'malformed_json', 'body_too_large', 'unsupported_media_type'];
const BODY_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** A path id or query string checked against its schema (an id longer than 80 characters). */
const PARAMS: readonly ErrorCode[] = ['validation_failed'];
/** The other kind of key: the admin key on a tenant route, a tenant key on an admin route. */
const WRONG_KEY: readonly ErrorCode[] = ['forbidden'];
/** A required Idempotency-Key: missing, malformed, used with another request, or still running. */
const KEYED: readonly ErrorCode[] = ['idempotency_key_required', 'validation_failed', 'idempotency_key_reused', 'idempotency_key_in_progress'];
const KEY_OPTIONAL: readonly ErrorCode[] = ['validation_failed', 'idempotency_key_reused', 'idempotency_key_in_progress'];
/** Through an account actor: its mailbox, its shard's owner, its deadline, the node draining. */
const ACTOR: readonly ErrorCode[] = ['mailbox_full', 'shard_unavailable', 'request_timeout', 'draining'];
/** An amount and a currency in the body, parsed by the domain. */
const MONEY: readonly ErrorCode[] = ['invalid_amount', 'unknown_currency'];
/** What the source account's actor can refuse a debit for. */
const DEBIT: readonly ErrorCode[] = ['account_frozen', 'account_closed', 'currency_mismatch', 'insufficient_funds', 'balance_out_of_range'];

const op = (operationId: string, summary: string, tag: Tag, ...codes: (readonly ErrorCode[] | ErrorCode)[]): Operation => ({
  operationId, summary, tag, codes: [...new Set(codes.flat())],
});

/** Every documented operation, keyed by method and fastify path. The baseline engine serves a subset of the same keys. */
export const OPERATIONS: Readonly<Record<OperationKey, Operation>> = {
  'GET /healthz': op('getHealth', 'Liveness: the process answers', 'operations'),
  'GET /readyz': op('getReadiness', 'Readiness: database reachable, shards owned, not draining', 'operations', 'draining', 'database_unavailable'),
  'GET /metrics': op('getMetrics', "This node's counters, in Prometheus text format", 'operations'),
  'GET /docs/json': {
    ...op('getOpenApiDocument', 'This OpenAPI document', 'operations'),
    success: { 200: { description: 'The OpenAPI 3 document the UI at /docs shows', type: 'object', additionalProperties: true } },
  },

  'POST /v1/tenants': op('createTenant', 'Create a tenant', 'admin', WRONG_KEY, KEYED),
  'GET /v1/tenants': op('listTenants', 'List the tenants', 'admin', WRONG_KEY),
  'POST /v1/tenants/:id/keys': op('createTenantKey', 'Create an API key for a tenant, shown once', 'admin', WRONG_KEY, KEYED, 'tenant_not_found'),
  'DELETE /v1/tenants/:id/keys/:keyId': op('revokeTenantKey', "Revoke a tenant's API key: refused at once on this node, within CONTROL_CACHE_MS on the others", 'admin',
    WRONG_KEY, PARAMS, 'tenant_not_found', 'key_not_found'),
  'PUT /v1/tenants/:id/limits': op('setTenantLimits', "Replace a tenant's rate limits", 'admin', WRONG_KEY, 'tenant_not_found'),
  'GET /v1/tenants/:id/limits': op('getTenantLimits', "A tenant's rate limits", 'admin', WRONG_KEY, PARAMS, 'tenant_not_found'),
  'GET /v1/cluster': op('getCluster', "The cluster map: live nodes, held shards, every shard's epoch and owner", 'admin', WRONG_KEY),
  'GET /v1/ops': op('getOps', "The ops page's data: the cluster map by region, each node's transfers/s and p99, hot accounts, transfers in flight", 'admin', WRONG_KEY),
  'GET /v1/suspense': op('listSuspense', 'Money returned to closed accounts: a balance per tenant, region and currency', 'admin', WRONG_KEY),
  'POST /v1/suspense/:id/payouts': op('payOutSuspense', "Pay money held in suspense out to an account of its tenant", 'admin',
    WRONG_KEY, KEYED, ACTOR, DEBIT, 'invalid_amount', 'account_not_found'),
  'GET /v1/actors/accounts/:id': op('inspectAccountActor', "An account actor's state, mailbox and journal position", 'admin', WRONG_KEY, PARAMS, 'account_not_found'),

  'POST /v1/accounts': op('openAccount', 'Open an account', 'accounts',
    WRONG_KEY, KEYED, ACTOR, 'unknown_currency', 'invalid_amount', 'invalid_region', 'account_exists'),
  'GET /v1/accounts/:id': op('getAccount', 'An account with its balance', 'accounts', WRONG_KEY, PARAMS, ACTOR, 'account_not_found'),
  'POST /v1/accounts/:id/freeze': op('freezeAccount', 'Freeze an account: it can no longer be debited', 'accounts',
    WRONG_KEY, KEY_OPTIONAL, ACTOR, 'account_not_found', 'account_closed'),
  'POST /v1/accounts/:id/unfreeze': op('unfreezeAccount', 'Unfreeze an account', 'accounts', WRONG_KEY, KEY_OPTIONAL, ACTOR, 'account_not_found', 'account_closed'),
  'POST /v1/accounts/:id/close': op('closeAccount', 'Close an account with a zero balance and no holds', 'accounts',
    WRONG_KEY, KEY_OPTIONAL, ACTOR, 'account_not_found', 'balance_not_zero', 'holds_outstanding'),
  'GET /v1/accounts/:id/statement': op('getAccountStatement', "An account's postings, newest first", 'accounts', WRONG_KEY, PARAMS, 'account_not_found'),
  // A region whose database cannot be read: its account answers 503; the tenant feed leaves it out and says so.
  'GET /v1/accounts/:id/events': op('getAccountEvents', "An account's ledger events in its order: a page, or a live stream (text/event-stream) resuming after Last-Event-ID", 'accounts',
    WRONG_KEY, PARAMS, 'account_not_found', 'region_unavailable'),
  'GET /v1/events': op('listEvents', "The tenant's ledger events after a cursor, each account's in its order", 'accounts', WRONG_KEY, PARAMS, 'region_unavailable'),

  'POST /v1/webhook-endpoints': op('createWebhookEndpoint', 'Create a webhook endpoint; its secret (whsec_...) is shown in this answer only', 'webhooks',
    WRONG_KEY, KEYED, 'invalid_webhook_url'),
  'GET /v1/webhook-endpoints': op('listWebhookEndpoints', "The tenant's webhook endpoints, oldest first", 'webhooks', WRONG_KEY, PARAMS),
  'GET /v1/webhook-endpoints/:id': op('getWebhookEndpoint', 'A webhook endpoint (never its secret)', 'webhooks', WRONG_KEY, PARAMS, 'webhook_endpoint_not_found'),
  'DELETE /v1/webhook-endpoints/:id': op('deleteWebhookEndpoint', 'Delete a webhook endpoint: its pending deliveries stop', 'webhooks', WRONG_KEY, PARAMS, 'webhook_endpoint_not_found'),
  'POST /v1/webhook-endpoints/:id/rotate-secret': op('rotateWebhookSecret', 'A new secret, shown once; the previous one keeps signing for WEBHOOK_SECRET_OVERLAP_MS', 'webhooks',
    WRONG_KEY, KEYED, PARAMS, 'webhook_endpoint_not_found'),
  'GET /v1/webhook-endpoints/:id/deliveries': op('listWebhookAttempts', "The attempts of an endpoint's deliveries, newest first", 'webhooks', WRONG_KEY, PARAMS, 'webhook_endpoint_not_found'),
  'POST /v1/webhook-endpoints/:id/deliveries/:deliveryId/redeliver': op('redeliverWebhook', 'Send a delivery again now, with a new round of retries', 'webhooks',
    WRONG_KEY, KEYED, PARAMS, 'delivery_not_found', 'webhook_endpoint_not_found'),

  'POST /v1/deposits': op('createDeposit', 'Deposit into an account', 'money',
    WRONG_KEY, KEYED, ACTOR, MONEY, 'account_not_found', 'currency_mismatch', 'balance_out_of_range'),
  'POST /v1/withdrawals': op('createWithdrawal', 'Withdraw from an account', 'money', WRONG_KEY, KEYED, ACTOR, MONEY, DEBIT, 'account_not_found'),
  'POST /v1/transfers': op('createTransfer', 'Transfer between two accounts of the tenant', 'money',
    WRONG_KEY, KEYED, ACTOR, MONEY, DEBIT, 'account_not_found', 'same_account'),
  'GET /v1/transfers/:id': op('getTransfer', 'A transfer as it stands', 'money', WRONG_KEY, PARAMS, 'transfer_not_found'),
  'POST /v1/transfers/:id/refunds': op('refundTransfer', 'Refund all or part of a settled transfer', 'money',
    WRONG_KEY, KEYED, ACTOR, DEBIT, 'invalid_amount', 'transfer_not_found', 'transfer_not_refundable', 'refund_exceeds_transfer'),
  // Each item's own failure is in the 200 answer; these are the batch's.
  'POST /v1/transfers/batch': op('createTransferBatch', 'Up to BATCH_MAX_ITEMS transfers, linked groups all or nothing', 'money', WRONG_KEY, KEYED, MONEY),

  'POST /v1/holds': op('authorizeHold', 'Reserve an amount on the source account', 'holds',
    WRONG_KEY, KEYED, ACTOR, MONEY, DEBIT, 'account_not_found', 'same_account', 'invalid_expiry'),
  'GET /v1/holds/:id': op('getHold', 'A hold as it stands', 'holds', WRONG_KEY, PARAMS, 'hold_not_found'),
  'POST /v1/holds/:id/capture': op('captureHold', 'Capture all or part of a hold', 'holds',
    WRONG_KEY, KEYED, ACTOR, 'invalid_amount', 'hold_not_found', 'hold_in_linked_group', 'hold_not_active', 'hold_expired', 'capture_exceeds_hold'),
  'POST /v1/holds/:id/void': op('voidHold', 'Release a hold', 'holds', WRONG_KEY, KEY_OPTIONAL, ACTOR, 'hold_not_found', 'hold_in_linked_group', 'hold_not_active'),
};

const isApi = (url: string): boolean => url.startsWith('/v1/');

/** The codes every route of its kind answers, added to the table's own. */
function kindCodes(method: string, url: string): ErrorCode[] {
  return [...(isApi(url) ? API : ['internal_error' as const]), ...(BODY_METHODS.has(method) ? BODY : [])];
}

const RETRY_AFTER = { type: 'integer', minimum: 1, description: 'Seconds to wait before retrying' } as const;

/** One response per status the codes map to; its description lists the codes with their titles. */
function problemResponses(codes: Iterable<ErrorCode>): Record<string, object> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set(codes)) {
    const status = statusOf(code);
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const statuses = [...byStatus.keys()].sort((a, b) => a - b);
  return Object.fromEntries(statuses.map((status) => {
    const retry = status === 429 || status === 503;
    const lines = byStatus.get(status)!.map((code) => `- \`${code}\`: ${CODES[code].title}`);
    return [String(status), {
      description: [`Problem; \`code\` is one of:`, ...lines, ...(retry ? ['', 'Retry after the seconds in Retry-After.'] : [])].join('\n'),
      content: { 'application/problem+json': { schema: { $ref: 'Problem#' } } },
      ...(retry ? { headers: { 'retry-after': RETRY_AFTER } } : {}),
    }];
  }));
}

/** The operation of a route, or undefined; HEAD answers what GET does. */
function operationOf(method: string, url: string): Operation | undefined {
  const key = `${method === 'HEAD' ? 'GET' : method} ${url}`;
  return Object.hasOwn(OPERATIONS, key) ? OPERATIONS[key as OperationKey] : undefined;
}

/**
 * onRoute hook: fills the route's operationId, summary, tag and every response from the table,
 * replacing any 4xx/5xx wildcard. Installed before any route registers, so it sees them all.
 */
export function documentRoute(route: RouteOptions): void {
  if (typeof route.method !== 'string') {
    // An operation has one operationId, so a documented route has one method (the UI's static files have several).
    const documented = isApi(route.url) || route.method.some((m) => operationOf(m, route.url));
    if (documented) throw new Error(`${route.method.join(',')} ${route.url}: one method per documented route`);
    return;
  }
  const entry = operationOf(route.method, route.url);
  if (!entry) {
    if (isApi(route.url)) throw new Error(`${route.method} ${route.url} has no entry in OPERATIONS (src/http/openapi.ts): every /v1 route is documented`);
    return;
  }
  const schema = route.schema ?? {};
  const declared = (schema.response ?? {}) as Record<string, object>;
  // The route's own success responses stay; its error responses are the table's.
  const success = Object.fromEntries(Object.entries(entry.success ?? declared).filter(([status]) => /^[123]/.test(status)));
  // A new object: the HEAD twin fastify derives from a GET route shares the original.
  route.schema = {
    ...schema,
    hide: false,
    operationId: entry.operationId,
    summary: entry.summary,
    tags: [entry.tag],
    ...(isApi(route.url) ? {} : { security: [] }),
    response: { ...success, ...problemResponses([...kindCodes(route.method, route.url), ...entry.codes]) },
  };
}

/**
 * @fastify/swagger's options: info, servers, tags, the bearer scheme, and components named
 * after the shared schemas' $id (Problem, Account, ...) rather than def-0, def-1: names a
 * client generator keeps.
 */
export function swaggerOptions(config: Pick<Config, 'advertisedUrl'>): FastifyDynamicSwaggerOptions {
  return {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'geopay', version: '0.1.0',
        description: 'Actor-model payment processor. Amounts are strings of integer minor units. Every error is application/problem+json '
          + 'with a stable `code` (docs/errors.md); each operation lists every status it can answer and the codes behind each.',
      },
      // The URL this node is reached at when one is configured, else relative to where this document was fetched.
      servers: [{ url: config.advertisedUrl || '/', description: 'This node' }],
      tags: TAGS,
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => {
        if (typeof json.$id !== 'string') return `def-${i}`;
        json.title ??= json.$id;
        return json.$id;
      },
    },
  };
}
