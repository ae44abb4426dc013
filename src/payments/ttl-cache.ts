// A small cache of lookups in flight or done, each trusted for a fixed time and bounded in
// count (cleared whole when full: cheap, and a miss costs one lookup). A lookup that fails is
// forgotten at once, so an outage is never remembered as an answer.

export class TtlCache<V> {
  private readonly entries = new Map<string, { value: Promise<V>; until: number }>();

  constructor(private readonly ttlMs: number, private readonly maxEntries: number) {}

  /** The cached value of `key`, or `load()`'s, shared by every caller until it expires. */
  get(key: string, now: number, load: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key);
    if (hit && hit.until >= now) return hit.value;
    if (this.entries.size >= this.maxEntries) this.entries.clear();
    const entry = { value: load(), until: now + this.ttlMs };
    this.entries.set(key, entry);
    entry.value.catch(() => {
      if (this.entries.get(key) === entry) this.entries.delete(key);
    });
    return entry.value;
  }

  forget(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
