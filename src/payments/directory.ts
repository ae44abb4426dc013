// The account directory: who owns an account and in which currency. These attributes never
// change after open, so they are cached; a miss reads PostgreSQL and only hits are kept.
import type { AccountId } from '../domain/ids.ts';
import { parseAccountId } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { DirectoryEntry, Repositories } from '../persistence/repositories.ts';

const MAX_ENTRIES = 200_000;

export interface OwnedAccount { id: AccountId; currency: string; region: string }

export class Directory {
  private readonly cache = new Map<string, DirectoryEntry>();

  constructor(private readonly accounts: Repositories['accounts']) {}

  async get(id: string): Promise<DirectoryEntry | undefined> {
    const hit = this.cache.get(id);
    if (hit) return hit;
    const found = await this.accounts.find(id);
    if (found) this.remember(found);
    return found;
  }

  remember(e: DirectoryEntry): void {
    if (this.cache.size >= MAX_ENTRIES) this.cache.clear();
    this.cache.set(e.id, e);
  }

  /**
   * The customer account if it exists and belongs to the tenant; account_not_found otherwise,
   * whatever the reason. External and suspense accounts are the ledger's, never a tenant's (a
   * suspense account carries its tenant's id, but only the admin pays it out).
   */
  async owned(tenantId: string, raw: string): Promise<OwnedAccount> {
    const id = parseAccountId(raw);
    if (!id || id.startsWith('ext_')) throw new GeopayError('account_not_found');
    const e = await this.get(id);
    if (!e || e.tenantId !== tenantId || e.kind !== 'customer') throw new GeopayError('account_not_found');
    return { id, currency: e.currency, region: e.region };
  }
}
