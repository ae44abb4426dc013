// The ids of what a keyed request creates (a transfer, a hold), derived from the request itself:
// tenant, Idempotency-Key and request hash. A retry of the request, even one that comes after
// its key expired (IDEMPOTENCY_RETENTION_MS) or while another node still runs the first
// attempt, carries the same id, so the primary key of `transfers` or `holds` refuses a second
// one and the actor answers the first (src/actors/batch.ts, `existingResource`).
//
// The request hash is part of the name on purpose: an id that exists then proves the request
// that made it was this very request, so its row needs no copy of the hash; and a key reused
// for another request after its retention makes another transfer, as keys expire by contract.
//
// The id also names its home region, the source account's (src/domain/ids.ts), whose database's
// primary key is the one that refuses the second transfer or hold. That holds only because
// the request fixes its source: in the body (transfers, deposits, withdrawals, holds, batch
// items) or through the resource in its path (a refund's original destination, a capture's
// hold source, a payout's suspense account), and an account never changes region. So the
// region is not in the hashed name: the request hash already fixes it, and two ids of two
// regions differ by their prefix whatever their hex, so adding it would change nothing.
//
// Trade-off: these ids are not time-sortable as the UUIDv7 ids of accounts and tenants are;
// nothing orders transfers or holds by id (listings and the relay order by their timestamps).
import { createHash } from 'node:crypto';
import type { HoldId, Region, TransferId } from '../domain/ids.ts';
import { makeHoldId, makeTransferId, uuidv8Hex } from '../domain/ids.ts';

/** What a keyed request is: its tenant (or admin scope), its key and its request hash. */
export interface KeyedRequest { tenantId: string; key: string; hash: string }

// A separator no part holds: tenant ids and request hashes are [a-z0-9_], client keys printable
// ASCII, and the keys a batch derives for its items add only U+001F.
const SEP = '\u0000';

function nameBased(kind: string, r: KeyedRequest): string {
  return uuidv8Hex(createHash('sha256').update([kind, r.tenantId, r.key, r.hash].join(SEP)).digest());
}

/** The transfer a keyed request creates, homed in its source account's region. */
export const keyedTransferId = (home: Region, r: KeyedRequest): TransferId => makeTransferId(home, nameBased('transfer', r));
/** The hold a keyed request places, homed in its source account's region. */
export const keyedHoldId = (home: Region, r: KeyedRequest): HoldId => makeHoldId(home, nameBased('hold', r));
