// A tenant's webhook endpoints (src/webhooks holds the signing, the retry policy, the address
// guard and the dispatcher): create one with its secret shown once, list, read, delete, rotate
// its secret with an overlap, list its delivery attempts, redeliver one. Endpoints, deliveries
// and attempts live in the control database beside the tenant, one queue for every region:
// a tenant's endpoints are its own whatever region an event comes from. Creates and rotations
// run under the tenant's Idempotency-Key; their replays answer without the secret.
import type { KeyedCreate } from '../persistence/repositories.ts';
import type { EndpointRow, WebhookStore } from '../persistence/webhooks.ts';
import { GeopayError } from '../domain/errors.ts';
import { checkWebhookUrl } from '../webhooks/address.ts';
import { isEventType } from '../webhooks/endpoints.ts';
import { makeEndpointId } from '../webhooks/ids.ts';
import { generateSecret } from '../webhooks/secrets.ts';
import type { InFlightKeys } from './in-flight-keys.ts';
import type { Outcome } from './outcome.ts';
import { STORED_CREATED, STORED_OK, keyedOutcome } from './outcome.ts';

const MAX_EVENT_TYPES = 64;

/** An endpoint as its tenant reads it: never the secret, which only a create or a rotation shows. */
export interface EndpointView {
  id: string; url: string; eventTypes: string[]; createdAt: string;
  disabledAt: string | null; disabledReason: string | null;
  /** While a rotated-out secret still signs beside the current one. */
  previousSecretExpiresAt: string | null;
}

export const endpointView = (e: EndpointRow): EndpointView => ({
  id: e.id, url: e.url, eventTypes: e.eventTypes, createdAt: e.createdAt.toISOString(),
  disabledAt: e.disabledAt?.toISOString() ?? null, disabledReason: e.disabledReason,
  previousSecretExpiresAt: e.previousSecretExpiresAt && e.previousSecret ? e.previousSecretExpiresAt.toISOString() : null,
});

/** The keyed writes of this service, on the control database (src/persistence/queries.ts). */
export interface WebhookKeyedWrites {
  createOnce(k: KeyedClaim, e: { id: string; tenantId: string; url: string; eventTypes: string[]; secret: string; now: Date }, stored: (row: EndpointRow) => unknown): Promise<KeyedCreate<EndpointRow>>;
  rotateOnce(k: KeyedClaim, r: { tenantId: string; id: string; newSecret: string; now: Date; overlapMs: number }, stored: (row: EndpointRow) => unknown): Promise<KeyedCreate<EndpointRow> | undefined>;
}

interface KeyedClaim { scope: string; key: string; requestHash: string; statusCode: number }

export interface WebhookEndpointsDeps {
  store: WebhookStore;
  keyed: WebhookKeyedWrites;
  keys: InFlightKeys;
  allowPrivate: boolean;
  secretOverlapMs: number;
  clock: () => number;
  /** Wakes the dispatcher (a redelivery is due now). */
  nudge: () => void;
  /** An endpoint was made or deleted here: what this node matched events against is out of date. */
  changed: () => void;
}

/** Keys of webhook writes are the tenant's, in a scope apart from its payments' keys. */
const scopeOf = (tenantId: string): string => `webhooks:${tenantId}`;

export class WebhookEndpoints {
  constructor(private readonly deps: WebhookEndpointsDeps) {}

  private now(): Date {
    return new Date(this.deps.clock());
  }

  /** A new endpoint and its secret (`whsec_...`), shown in this answer only. */
  create(r: { tenantId: string; key: string; hash: string; url: string; eventTypes: string[] }): Promise<Outcome<EndpointView & { secret: string }>> {
    const checked = checkWebhookUrl(r.url, { allowPrivate: this.deps.allowPrivate });
    if (!checked.ok) throw new GeopayError('invalid_webhook_url', checked.detail);
    if (r.eventTypes.length > MAX_EVENT_TYPES || !r.eventTypes.every(isEventType)) {
      throw new GeopayError('validation_failed', `eventTypes: at most ${MAX_EVENT_TYPES} dot-separated names of [A-Za-z0-9_]`);
    }
    const scope = scopeOf(r.tenantId);
    return this.deps.keys.run(scope, r.key, r.hash, async () => {
      const now = this.now();
      const row = { id: makeEndpointId(now.getTime()), tenantId: r.tenantId, url: checked.url.href, eventTypes: [...new Set(r.eventTypes)].sort(), secret: generateSecret(), now };
      const res = await this.deps.keyed.createOnce({ scope, key: r.key, requestHash: r.hash, statusCode: STORED_CREATED }, row, endpointView);
      this.deps.changed();
      return keyedOutcome(res, r.hash, (e) => ({ ...endpointView(e), secret: e.secret }));
    });
  }

  async list(tenantId: string, limit: number, after?: string): Promise<{ data: EndpointView[]; nextCursor: string | null }> {
    const page = await this.deps.store.endpoints.list(tenantId, { limit, ...(after ? { afterId: after } : {}) });
    return { data: page.data.map(endpointView), nextCursor: page.nextCursor };
  }

  async get(tenantId: string, id: string): Promise<EndpointView> {
    const e = await this.deps.store.endpoints.get(tenantId, id);
    if (!e) throw new GeopayError('webhook_endpoint_not_found');
    return endpointView(e);
  }

  /** Deleted at once; its pending deliveries stop. Deleting again answers not found. */
  async delete(tenantId: string, id: string): Promise<void> {
    if (!(await this.deps.store.endpoints.delete(tenantId, id, this.now()))) throw new GeopayError('webhook_endpoint_not_found');
    this.deps.changed();
  }

  /** A new secret, shown in this answer only; the previous one keeps signing for WEBHOOK_SECRET_OVERLAP_MS. */
  rotate(r: { tenantId: string; id: string; key: string; hash: string }): Promise<Outcome<EndpointView & { secret: string }>> {
    const scope = scopeOf(r.tenantId);
    return this.deps.keys.run(scope, r.key, r.hash, async () => {
      const res = await this.deps.keyed.rotateOnce(
        { scope, key: r.key, requestHash: r.hash, statusCode: STORED_OK },
        { tenantId: r.tenantId, id: r.id, newSecret: generateSecret(), now: this.now(), overlapMs: this.deps.secretOverlapMs }, endpointView,
      );
      if (!res) throw new GeopayError('webhook_endpoint_not_found');
      return keyedOutcome(res, r.hash, (e) => ({ ...endpointView(e), secret: e.secret }));
    });
  }

  /** The endpoint's delivery attempts, newest first. */
  async attempts(tenantId: string, id: string, limit: number, before?: string) {
    await this.get(tenantId, id);
    return this.deps.store.endpoints.attempts(tenantId, id, { limit, ...(before ? { beforeId: before } : {}) });
  }

  /** Sends a delivery again now (a new round of retries), unless it is pending already. */
  async redeliver(tenantId: string, endpointId: string, deliveryId: string): Promise<{ id: string; state: 'pending' }> {
    const d = await this.deps.store.deliveries.get(tenantId, deliveryId);
    if (!d || d.endpointId !== endpointId) throw new GeopayError('delivery_not_found');
    const r = await this.deps.store.deliveries.redeliver(tenantId, deliveryId, this.now());
    if (r === 'not_found') throw new GeopayError('delivery_not_found');
    if (r === 'endpoint_disabled') throw new GeopayError('webhook_endpoint_not_found', 'the endpoint is disabled or deleted');
    if (r === 'redelivering') this.deps.nudge();
    return { id: deliveryId, state: 'pending' };
  }
}
