// The ledger event stream, read by tenants: their feed over every region database (merged,
// behind an opaque cursor that resumes exactly), one account's events in its order, and a live
// follow of one account (the SSE route's), woken by this node's commits and polled otherwise.
// The events themselves are written by the commit statement (src/persistence/journal.ts).
import { Buffer } from 'node:buffer';
import type { AccountId } from '../domain/ids.ts';
import { parseAccountId, parseRegion } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import { invariant } from '../domain/assert.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import type { WriteSet } from '../persistence/journal.ts';
import type { EventPosition, Repositories, StoredEvent } from '../persistence/repositories.ts';
import type { Directory } from './directory.ts';

/** The stream's settings (EVENTS_HEARTBEAT_MS, EVENTS_POLL_MS in docs/api.md "Events"). */
export interface EventStreamSettings {
  /** A follower that saw no event for this long gets a comment line: proxies keep the stream open, clients see it alive. */
  heartbeatMs: number;
  /** A follower reads its account's events at least this often: a commit on another node wakes nobody here. */
  pollMs: number;
  /** Events read at once while a follower catches up. */
  pageSize: number;
}

export const DEFAULT_EVENT_STREAM_SETTINGS: Readonly<EventStreamSettings> = Object.freeze({ heartbeatMs: 15_000, pollMs: 1_000, pageSize: 100 });

export const DEFAULT_PAGE = 100;
export const MAX_PAGE = 1_000;

/** An event as clients see it; `data` is the posting, transfer or hold as the event left it. */
export interface LedgerEventView {
  id: string; type: string; accountId: string; tenantId: string | null; seq: number; createdAt: string; data: unknown;
}

/** `nextCursor`: where to resume (null: from the first event); `hasMore`: ask again at once. */
export interface EventPage { data: LedgerEventView[]; nextCursor: string | null; hasMore: boolean }

/** A tenant's page; regions whose database could not be read are named, their place in the cursor kept. */
export interface TenantEventPage extends EventPage { unavailableRegions: string[] }

/** A live follow of one account's events, after a given one. */
export interface EventFollow {
  readonly heartbeatMs: number;
  /** The events after the last ones given, or none once heartbeatMs passed without any (or `signal` aborted). */
  next(signal: AbortSignal): Promise<LedgerEventView[]>;
}

/**
 * An event's id: `<account id>.<n>`, n its number in the account's order (1, 2, 3, ... as the
 * account's actor committed them). It names its account, so it is unique everywhere, and it is
 * its own resume point: the account's events after n.
 */
export const eventId = (accountId: string, n: number): string => `${accountId}.${n}`;

const EVENT_ID = /^([a-z]{3}_[A-Za-z0-9_-]{1,100})\.([1-9][0-9]{0,14})$/;

/** The account and number of an event id; undefined for anything else. */
export function parseEventId(raw: unknown): { accountId: AccountId; n: number } | undefined {
  const m = typeof raw === 'string' ? EVENT_ID.exec(raw) : null;
  const accountId = m ? parseAccountId(m[1]) : undefined;
  return m && accountId ? { accountId, n: Number(m[2]) } : undefined;
}

/** An event as clients see it, here (pages, streams) and on the bus. */
export const viewOf = (e: StoredEvent): LedgerEventView => ({
  id: eventId(e.accountId, e.n), type: e.type, accountId: e.accountId, tenantId: e.tenantId, seq: e.seq, createdAt: e.createdAt, data: e.payload,
});

/** Where an account's events resume: after the event `raw` names (an event of that account), or from the first. */
function afterOf(accountId: AccountId, raw: string | undefined): number {
  if (raw === undefined || raw === '') return 0;
  const parsed = parseEventId(raw);
  if (!parsed || parsed.accountId !== accountId) throw new GeopayError('validation_failed', 'after / Last-Event-ID must be the id of an event of this account');
  return parsed.n;
}

function pageLimit(limit: number | undefined): number {
  const n = limit ?? DEFAULT_PAGE;
  if (!Number.isInteger(n) || n < 1 || n > MAX_PAGE) throw new GeopayError('validation_failed', `limit must be 1-${MAX_PAGE}`);
  return n;
}

export class LedgerEvents {
  private readonly wakeups = new Wakeups();
  private readonly settings: EventStreamSettings;

  constructor(private readonly deps: {
    repos: Repositories; directory: Directory; registry: Pick<AccountRegistry, 'onCommitted'>; settings?: Partial<EventStreamSettings> | undefined;
  }) {
    this.settings = { ...DEFAULT_EVENT_STREAM_SETTINGS, ...deps.settings };
    invariant(this.settings.heartbeatMs > 0 && this.settings.pollMs > 0 && this.settings.pageSize >= 1, 'event stream settings are positive');
    deps.registry.onCommitted((ws) => this.wakeups.committed(ws));
  }

  /** The tenant's events after `cursor`, every region database's, each account's in its order. */
  async tenantPage(tenantId: string, cursor: string | undefined, limit: number | undefined): Promise<TenantEventPage> {
    const n = pageLimit(limit);
    const from = decodeCursor(cursor);
    const { events } = this.deps.repos;
    const pages = await Promise.all(events.databases().map(async ({ key, region }) => {
      try {
        return { key, events: await events.ofTenant(region, tenantId, from.get(key) ?? null, n + 1) };
      } catch (err) {
        // One region down stops none of the others: its place in the cursor stays where it was.
        if (err instanceof GeopayError && err.code === 'region_unavailable') return { key, events: undefined };
        throw err;
      }
    }));
    const readable = pages.flatMap((p) => (p.events ? [{ key: p.key, events: p.events }] : []));
    if (readable.length === 0) throw new GeopayError('region_unavailable', 'no database of the tenant\'s events can be read');
    const taken = mergeByTime(readable, n);
    const next = new Map(from);
    for (const { key, event } of taken) next.set(key, event.position);
    const takenOf = (key: string) => taken.filter((t) => t.key === key).length;
    return {
      data: taken.map(({ event }) => viewOf(event)),
      nextCursor: encodeCursor(next),
      hasMore: readable.some((p) => p.events.length > takenOf(p.key)),
      unavailableRegions: pages.filter((p) => !p.events).map((p) => p.key),
    };
  }

  /** One of the tenant's accounts' events after the event `after` (none: from the first), in its order. */
  async accountPage(tenantId: string, rawAccountId: string, after: string | undefined, limit: number | undefined): Promise<EventPage> {
    const n = pageLimit(limit);
    const { id } = await this.deps.directory.owned(tenantId, rawAccountId);
    const afterN = afterOf(id, after);
    const events = await this.deps.repos.events.ofAccount(id, afterN, n + 1);
    const page = events.slice(0, n);
    const last = page.at(-1)?.n ?? afterN;
    return { data: page.map(viewOf), nextCursor: last === 0 ? null : eventId(id, last), hasMore: events.length > n };
  }

  /**
   * A live follow of one of the tenant's accounts after the event `after`. The account and the
   * cursor are checked here, before a stream starts: account_not_found, validation_failed.
   */
  async follow(tenantId: string, rawAccountId: string, after: string | undefined): Promise<EventFollow> {
    const { id } = await this.deps.directory.owned(tenantId, rawAccountId);
    return new AccountFollow(id, afterOf(id, after), this.deps.repos.events, this.wakeups, this.settings);
  }
}

/**
 * Reads an account's events as they come: catch-up pages first, then, with nothing new, waits
 * for this node's next commit of the account or the poll interval, whichever comes first. The
 * wake-up is armed before each read, so a commit between the read and the wait is not missed.
 */
class AccountFollow implements EventFollow {
  readonly heartbeatMs: number;

  constructor(
    private readonly id: AccountId,
    private afterN: number,
    private readonly events: Repositories['events'],
    private readonly wakeups: Wakeups,
    private readonly settings: EventStreamSettings,
  ) {
    this.heartbeatMs = settings.heartbeatMs;
  }

  async next(signal: AbortSignal): Promise<LedgerEventView[]> {
    const deadline = performance.now() + this.settings.heartbeatMs;
    while (!signal.aborted) {
      const woken = this.wakeups.arm(this.id);
      try {
        const found = await this.events.ofAccount(this.id, this.afterN, this.settings.pageSize);
        if (found.length > 0) return this.took(found);
        const left = deadline - performance.now();
        if (left <= 0) return [];
        await firstOf(woken.fired, Math.min(this.settings.pollMs, left), signal);
      } finally {
        woken.cancel();
      }
    }
    return [];
  }

  private took(found: StoredEvent[]): LedgerEventView[] {
    // The account's order has no gap: one commit in flight per account, numbered on from its last.
    found.forEach((e, i) => invariant(e.n === this.afterN + i + 1, `event ${e.n} of ${this.id} follows ${this.afterN + i}`));
    this.afterN = found.at(-1)!.n;
    return found.map(viewOf);
  }
}

/** Resolves at the first of: `fired`, `ms` later, `signal` aborted. */
function firstOf(fired: Promise<void>, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    void fired.then(done);
  });
}

/** The followers waiting for an account's next commit on this node. */
class Wakeups {
  private readonly waiting = new Map<string, Set<() => void>>();

  /** A wake-up at the account's next commit here; cancel it once done with it. */
  arm(accountId: string): { fired: Promise<void>; cancel: () => void } {
    let wake: () => void = () => undefined;
    const fired = new Promise<void>((resolve) => { wake = resolve; });
    let set = this.waiting.get(accountId);
    if (!set) {
      set = new Set();
      this.waiting.set(accountId, set);
    }
    set.add(wake);
    const armed = set;
    return {
      fired,
      cancel: () => {
        armed.delete(wake);
        if (armed.size === 0 && this.waiting.get(accountId) === armed) this.waiting.delete(accountId);
      },
    };
  }

  committed(ws: WriteSet): void {
    if (ws.events.length === 0) return;
    for (const accountId of new Set(ws.events.map((e) => e.accountId))) {
      const set = this.waiting.get(accountId);
      if (!set) continue;
      this.waiting.delete(accountId);
      for (const wake of set) wake();
    }
  }
}

/** The heads of each database's page, oldest commit time first, up to `limit`: each page's own order is kept. */
function mergeByTime(pages: { key: string; events: StoredEvent[] }[], limit: number): { key: string; event: StoredEvent }[] {
  const heads = pages.map(() => 0);
  const out: { key: string; event: StoredEvent }[] = [];
  while (out.length < limit) {
    let best = -1;
    pages.forEach((p, i) => {
      const e = p.events[heads[i]!];
      if (e && (best < 0 || e.createdAt < pages[best]!.events[heads[best]!]!.createdAt)) best = i;
    });
    if (best < 0) break;
    out.push({ key: pages[best]!.key, event: pages[best]!.events[heads[best]!++]! });
  }
  return out;
}

// The tenant feed's cursor: per region database, the position of the last event given. Opaque to
// clients: base64url of `v1;<key>=<xid>.<ord>;...`, the key a region, or `*` for the one
// database that holds every region's events.
const CURSOR_VERSION = 'v1';
const MAX_XID = (1n << 64n) - 1n;
const MAX_ORD = 2 ** 31 - 1;

function encodeCursor(positions: ReadonlyMap<string, EventPosition>): string | null {
  if (positions.size === 0) return null;
  const parts = [...positions].sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, p]) => `${key}=${p.xid}.${p.ord}`);
  return Buffer.from([CURSOR_VERSION, ...parts].join(';')).toString('base64url');
}

function decodeCursor(raw: string | undefined): Map<string, EventPosition> {
  const out = new Map<string, EventPosition>();
  if (raw === undefined || raw === '') return out;
  const bad = (): GeopayError => new GeopayError('validation_failed', 'after must be a nextCursor of GET /v1/events');
  if (!/^[A-Za-z0-9_-]{1,2000}$/.test(raw)) throw bad();
  const [version, ...parts] = Buffer.from(raw, 'base64url').toString('utf8').split(';');
  if (version !== CURSOR_VERSION || parts.length === 0) throw bad();
  for (const part of parts) {
    const m = /^([^=]{1,16})=([0-9]{1,20})\.([1-9][0-9]{0,9})$/.exec(part);
    if (!m || (m[1] !== '*' && !parseRegion(m[1])) || out.has(m[1]!) || BigInt(m[2]!) > MAX_XID || Number(m[3]) > MAX_ORD) throw bad();
    out.set(m[1]!, { xid: m[2]!, ord: Number(m[3]) });
  }
  return out;
}
