// The account directory: who owns an account and in which currency. These attributes never
// change after open, so they are cached; a miss reads PostgreSQL and only hits are kept. A
// tenant's accounts mostly share them: each distinct set is kept once, and each account is a
// map entry pointing to it.
import type { AccountId } from '../domain/ids.ts';
import { parseAccountId } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { DirectoryEntry, Repositories } from '../persistence/repositories.ts';

const MAX_ENTRIES = 200_000;

export interface OwnedAccount { id: AccountId; currency: string; region: string }

type Attributes = Readonly<Omit<DirectoryEntry, 'id'>>;

export class Directory {
  private readonly cache = new Map<string, Attributes>();
  /** Each distinct set of attributes once, by its fields; cleared with the cache. */
  private readonly shared = new Map<string, Attributes>();

  constructor(private readonly accounts: Repositories['accounts']) {}

  async get(id: string): Promise<DirectoryEntry | undefined> {
    const hit = this.cache.get(id);
    if (hit) return { id, ...hit };
    const found = await this.accounts.find(id);
    if (found) this.remember(found);
    return found;
  }

  remember(e: DirectoryEntry): void {
    if (this.cache.size >= MAX_ENTRIES) {
      this.cache.clear();
      this.shared.clear();
    }
    this.cache.set(e.id, this.attributesOf(e));
  }

  private attributesOf(e: DirectoryEntry): Attributes {
    const key = JSON.stringify([e.tenantId, e.currency, e.kind, e.region]);
    const known = this.shared.get(key);
    if (known) return known;
    const made: Attributes = Object.freeze({ tenantId: e.tenantId, currency: e.currency, kind: e.kind, region: e.region });
    this.shared.set(key, made);
    return made;
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
