// Branded ids, built only through the validating parsers below. Ids are time-sortable
// (UUIDv7 layout, hex), or name-based where a retry must find what it made. Account, transfer
// and hold ids carry their home region, so any node finds the owner or the database of a read
// without a lookup, and a region's data never needs a directory kept in another region.
import type { Currency } from './money.ts';
import { CURRENCIES } from './money.ts';

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

export type AccountId = Brand<string, 'AccountId'>;
export type TransferId = Brand<string, 'TransferId'>;
export type TenantId = Brand<string, 'TenantId'>;
export type HoldId = Brand<string, 'HoldId'>;
export type Region = Brand<string, 'Region'>;
/** A shard: a region and a hash bucket, written `region/bucket`. Built and taken apart only here. */
export type ShardId = Brand<string, 'ShardId'>;

const REGION_PART = '[a-z][a-z0-9-]{0,15}';
const HEX32 = '[0-9a-f]{32}';
const REGION = new RegExp(`^${REGION_PART}$`);
const HEX = new RegExp(`^${HEX32}$`);
const CUSTOMER = new RegExp(`^acc_(${REGION_PART})_${HEX32}$`);
const EXTERNAL = new RegExp(`^ext_(${REGION_PART})_([A-Z]{3})$`);
const SUSPENSE = new RegExp(`^sus_(${REGION_PART})_([A-Z]{3})_(${HEX32})$`);
// A region never holds `_`, so the region and the hex of `tr_<region>_<hex>` cannot be confused.
const TRANSFER = new RegExp(`^tr_(${REGION_PART})_${HEX32}$`);
const TENANT = new RegExp(`^ten_${HEX32}$`);
const HOLD = new RegExp(`^hold_(${REGION_PART})_${HEX32}$`);
/** The shapes of transfer and hold ids, for the API's documented schemas (src/http/schemas.ts). */
export const TRANSFER_ID_PATTERN = TRANSFER.source;
export const HOLD_ID_PATTERN = HOLD.source;

export function parseRegion(raw: unknown): Region | undefined {
  return typeof raw === 'string' && REGION.test(raw) ? (raw as Region) : undefined;
}

export function parseAccountId(raw: unknown): AccountId | undefined {
  if (typeof raw !== 'string') return undefined;
  if (CUSTOMER.test(raw)) return raw as AccountId;
  const m = EXTERNAL.exec(raw) ?? SUSPENSE.exec(raw);
  if (m && Object.hasOwn(CURRENCIES, m[2]!)) return raw as AccountId;
  return undefined;
}

export function parseTransferId(raw: unknown): TransferId | undefined {
  return typeof raw === 'string' && TRANSFER.test(raw) ? (raw as TransferId) : undefined;
}

export function parseHoldId(raw: unknown): HoldId | undefined {
  return typeof raw === 'string' && HOLD.test(raw) ? (raw as HoldId) : undefined;
}

/**
 * A hold id, `hold_<region>_<32 hex>`: its home region is its source account's, where the
 * hold is reserved and its row is committed.
 */
export function makeHoldId(home: Region, hex: string): HoldId {
  return `hold_${homed(home, hex)}` as HoldId;
}

export function parseTenantId(raw: unknown): TenantId | undefined {
  return typeof raw === 'string' && TENANT.test(raw) ? (raw as TenantId) : undefined;
}

/** The region an account lives in, read off its id. */
export function regionOf(id: AccountId): Region {
  const m = /^(?:acc|ext|sus)_([a-z][a-z0-9-]{0,15})_/.exec(id);
  if (!m) throw new Error(`account id without region: ${id}`);
  return m[1] as Region;
}

/** The region whose database holds this transfer (its source account's), read off its id. */
export function regionOfTransfer(id: TransferId): Region {
  const m = TRANSFER.exec(id);
  if (!m) throw new Error(`not a transfer id: ${id}`);
  return m[1] as Region;
}

/** The region whose database holds this hold (its source account's), read off its id. */
export function regionOfHold(id: HoldId): Region {
  const m = HOLD.exec(id);
  if (!m) throw new Error(`not a hold id: ${id}`);
  return m[1] as Region;
}

export function isExternal(id: AccountId): boolean {
  return id.startsWith('ext_');
}

/** Money enters and leaves the ledger through one external account per region and currency. */
export function externalAccountId(region: Region, currency: Currency): AccountId {
  return `ext_${region}_${currency}` as AccountId;
}

/**
 * Money returned to a closed account is kept, visible to the admin, in one suspense account
 * per tenant, region and currency: `sus_<region>_<currency>_<tenant hex>`.
 */
export function suspenseAccountId(region: Region, currency: Currency, tenantId: TenantId): AccountId {
  const hex = TENANT.test(tenantId) ? tenantId.slice('ten_'.length) : undefined;
  if (hex === undefined) throw new Error(`not a tenant id: ${tenantId}`);
  return `sus_${region}_${currency}_${hex}` as AccountId;
}

/** The tenant, region and currency of a suspense account; undefined for any other id. */
/**
 * What a ledger-owned account (an external or a suspense account) is, read off its id; undefined
 * for a customer account. Ledger accounts are opened on first use, so their id says it all.
 */
export function ledgerAccountParts(id: string): { kind: 'external' | 'suspense'; region: Region; currency: Currency; tenantId: TenantId | null } | undefined {
  if (id.startsWith('ext_')) {
    const m = EXTERNAL.exec(id);
    return m && Object.hasOwn(CURRENCIES, m[2]!) ? { kind: 'external', region: m[1] as Region, currency: m[2] as Currency, tenantId: null } : undefined;
  }
  if (!id.startsWith('sus_')) return undefined;
  const s = suspenseParts(id);
  return s ? { kind: 'suspense', ...s } : undefined;
}

export function suspenseParts(id: string): { tenantId: TenantId; region: Region; currency: Currency } | undefined {
  const m = SUSPENSE.exec(id);
  if (!m || !Object.hasOwn(CURRENCIES, m[2]!)) return undefined;
  return { region: m[1] as Region, currency: m[2] as Currency, tenantId: `ten_${m[3]!}` as TenantId };
}

const HEX_DIGITS = '0123456789abcdef';

/** UUIDv7 as 32 hex digits: 48 bits of milliseconds, then version, variant and randomness. */
export function uuidv7Hex(nowMs: number, random: Uint8Array): string {
  if (random.length < 10) throw new Error('uuidv7 needs 10 random bytes');
  const bytes = new Uint8Array(16);
  let t = BigInt(Math.floor(nowMs));
  for (let i = 5; i >= 0; i--) {
    bytes[i] = Number(t & 0xffn);
    t >>= 8n;
  }
  bytes.set(random.subarray(0, 10), 6);
  bytes[6] = (bytes[6]! & 0x0f) | 0x70;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  return hexOf(bytes);
}

/**
 * A name-based id as 32 hex digits (UUIDv8 layout, RFC 9562): the first 16 bytes of a digest
 * the caller computed over the name, with the version and variant bits set. The same name
 * always gives the same id, so a retry finds what its first attempt made; the price is that
 * such ids are not time-sortable (order by `created_at` instead).
 */
export function uuidv8Hex(digest: Uint8Array): string {
  if (digest.length < 16) throw new Error('a name-based id needs 16 bytes of digest');
  const bytes = digest.slice(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x80;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  return hexOf(bytes);
}

function hexOf(bytes: Uint8Array): string {
  let hex = '';
  for (const b of bytes) hex += HEX_DIGITS[b >> 4]! + HEX_DIGITS[b & 0x0f]!;
  return hex;
}

export function makeAccountId(region: Region, hex: string): AccountId {
  return `acc_${region}_${hex}` as AccountId;
}
/**
 * A transfer id, `tr_<region>_<32 hex>`: its home region is its source account's, where the
 * debit and the transfer's row (the outbox, the single truth of its state) are committed.
 */
export function makeTransferId(home: Region, hex: string): TransferId {
  return `tr_${homed(home, hex)}` as TransferId;
}

// A maker handed a malformed region or anything but 32 hex digits is our bug: the id would be
// stored, then refused by its own parser on every read.
function homed(home: Region, hex: string): string {
  if (!REGION.test(home)) throw new Error(`not a region: ${home}`);
  if (!HEX.test(hex)) throw new Error(`an id needs 32 hex digits: ${hex}`);
  return `${home}_${hex}`;
}

export function makeTenantId(hex: string): TenantId {
  return `ten_${hex}` as TenantId;
}

/** Shard of an account: its region and a bucket from a stable hash (FNV-1a, 32 bit). */
export function shardOf(id: AccountId, buckets: number): ShardId {
  if (!Number.isInteger(buckets) || buckets < 1) throw new Error(`bucket count must be a positive integer: ${buckets}`);
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return makeShardId(regionOf(id), h % buckets);
}

export function makeShardId(region: Region, bucket: number): ShardId {
  if (!Number.isInteger(bucket) || bucket < 0) throw new Error(`bucket must be a non-negative integer: ${bucket}`);
  return `${region}/${bucket}` as ShardId;
}

const SHARD = /^([a-z][a-z0-9-]{0,15})\/(0|[1-9][0-9]{0,8})$/;

export function parseShardId(raw: unknown): ShardId | undefined {
  return typeof raw === 'string' && SHARD.test(raw) ? (raw as ShardId) : undefined;
}

/** The region and bucket of a shard. */
export function shardParts(id: ShardId): { region: Region; bucket: number } {
  const m = SHARD.exec(id);
  if (!m) throw new Error(`not a shard id: ${id}`);
  return { region: m[1] as Region, bucket: Number(m[2]) };
}
