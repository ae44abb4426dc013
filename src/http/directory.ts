// The account directory: who owns an account and in which currency. These attributes never
// change after open, so they are cached; a miss reads PostgreSQL and only hits are kept.
import type { Pool } from '../persistence/db.ts';
import type { DirectoryEntry } from '../persistence/queries.ts';
import { findAccount } from '../persistence/queries.ts';

const MAX_ENTRIES = 200_000;

export class Directory {
  private readonly cache = new Map<string, DirectoryEntry>();

  constructor(private readonly pool: Pool) {}

  async get(id: string): Promise<DirectoryEntry | undefined> {
    const hit = this.cache.get(id);
    if (hit) return hit;
    const found = await findAccount(this.pool, id);
    if (found) this.remember(found);
    return found;
  }

  remember(e: DirectoryEntry): void {
    if (this.cache.size >= MAX_ENTRIES) this.cache.clear();
    this.cache.set(e.id, e);
  }
}
