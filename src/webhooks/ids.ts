// Endpoint and delivery ids: `we_` and `msg_` with 32 hex digits of a UUIDv7, time-sortable
// like the ledger's ids. A delivery's id is its webhook-id, so it never holds a `.` (the spec).
import { randomBytes } from 'node:crypto';
import { uuidv7Hex } from '../domain/ids.ts';

declare const brand: unique symbol;
export type EndpointId = string & { readonly [brand]: 'EndpointId' };
export type DeliveryId = string & { readonly [brand]: 'DeliveryId' };

const ENDPOINT = /^we_[0-9a-f]{32}$/;
const DELIVERY = /^msg_[0-9a-f]{32}$/;

export function parseEndpointId(raw: unknown): EndpointId | undefined {
  return typeof raw === 'string' && ENDPOINT.test(raw) ? (raw as EndpointId) : undefined;
}

export function parseDeliveryId(raw: unknown): DeliveryId | undefined {
  return typeof raw === 'string' && DELIVERY.test(raw) ? (raw as DeliveryId) : undefined;
}

export function makeEndpointId(nowMs: number, random: Uint8Array = randomBytes(10)): EndpointId {
  return `we_${uuidv7Hex(nowMs, random)}` as EndpointId;
}

export function makeDeliveryId(nowMs: number, random: Uint8Array = randomBytes(10)): DeliveryId {
  return `msg_${uuidv7Hex(nowMs, random)}` as DeliveryId;
}
