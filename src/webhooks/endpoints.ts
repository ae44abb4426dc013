// What the routes and the event stream call: create an endpoint (URL checked, id and secret
// made here), rotate its secret, and fan one event out to every endpoint of its tenant that
// takes its type. Refusals are returned values with stable codes; the HTTP layer maps them.
import type { DeliveryRow, EndpointRow, WebhookStore } from '../persistence/webhooks.ts';
import type { UrlRefusal } from './address.ts';
import { checkWebhookUrl } from './address.ts';
import { makeDeliveryId, makeEndpointId } from './ids.ts';
import { generateSecret } from './secrets.ts';

/** The spec's advice for event types: full-stop delimited identifiers of [a-zA-Z0-9_]. */
const EVENT_TYPE = /^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,7}$/;
const MAX_EVENT_TYPES = 64;

export const isEventType = (raw: unknown): raw is string => typeof raw === 'string' && EVENT_TYPE.test(raw);

export type CreateEndpointResult =
  | { ok: true; endpoint: EndpointRow }
  | { ok: false; reason: UrlRefusal | 'invalid_event_types'; detail: string };

/**
 * A new endpoint with a fresh secret. The URL's scheme and, for an IP literal, its address are
 * checked now; a host name is checked at every attempt, because what it resolves to can change.
 */
export async function createWebhookEndpoint(
  store: Pick<WebhookStore, 'endpoints'>,
  input: { tenantId: string; url: string; eventTypes: readonly string[] },
  opts: { allowPrivate: boolean; now: Date },
): Promise<CreateEndpointResult> {
  const checked = checkWebhookUrl(input.url, { allowPrivate: opts.allowPrivate });
  if (!checked.ok) return checked;
  if (input.eventTypes.length > MAX_EVENT_TYPES || !input.eventTypes.every(isEventType)) {
    return { ok: false, reason: 'invalid_event_types', detail: `at most ${MAX_EVENT_TYPES} dot-separated names of [A-Za-z0-9_]` };
  }
  const endpoint = await store.endpoints.create({
    id: makeEndpointId(opts.now.getTime()), tenantId: input.tenantId, url: checked.url.href,
    eventTypes: [...new Set(input.eventTypes)].sort(), secret: generateSecret(), now: opts.now,
  });
  return { ok: true, endpoint };
}

/** A new current secret; the old one keeps signing for `overlapMs`. Undefined: no such endpoint of the tenant. */
export async function rotateWebhookSecret(
  store: Pick<WebhookStore, 'endpoints'>,
  input: { tenantId: string; endpointId: string },
  opts: { now: Date; overlapMs: number },
): Promise<EndpointRow | undefined> {
  return store.endpoints.rotateSecret({ tenantId: input.tenantId, id: input.endpointId, newSecret: generateSecret(), now: opts.now, overlapMs: opts.overlapMs });
}

export interface WebhookEvent {
  tenantId: string;
  /** Stable per event: enqueueing it again (a redelivered stream message) makes no second delivery. */
  eventId: string;
  type: string;
  /** The account whose journal the event comes from, and its seq there; both null for an event of no account. */
  accountId: string | null;
  seq: bigint | null;
  /** When the event happened (the payload's `timestamp`, not the attempt's). */
  occurredAt: Date;
  data: unknown;
}

/** The spec's payload shape: type, timestamp of the event, data. */
export const webhookPayload = (e: Pick<WebhookEvent, 'type' | 'occurredAt' | 'data'>) => ({ type: e.type, timestamp: e.occurredAt.toISOString(), data: e.data });

/**
 * One delivery per matching endpoint, each due now; idempotent per (endpoint, event), so a
 * caller that failed half way enqueues the same event again. One endpoint at a time: a
 * tenant's endpoints are few, and an event fanned out never holds more than one connection.
 */
export async function enqueueEvent(store: WebhookStore, event: WebhookEvent, opts: { now: Date }): Promise<{ delivery: DeliveryRow; created: boolean }[]> {
  const payload = webhookPayload(event);
  const out = [];
  for (const e of await store.endpoints.matching(event.tenantId, event.type)) {
    out.push(await store.deliveries.enqueue({
      id: makeDeliveryId(opts.now.getTime()), endpointId: e.id, eventId: event.eventId, eventType: event.type,
      accountId: event.accountId, seq: event.seq, payload, now: opts.now,
    }));
  }
  return out;
}
