// The ledger checker: reads a geopay (or baseline) database after a run, and optionally the
// run's request log, and says which money invariant broke, naming the account and seq.
// CLI: node --import tsx bench/checker.ts --database-url URL [--requests FILE.ndjson]
//  or: ... --region-database-urls eu=URL,us=URL (a database per region, checked together)
// Module: check(pool, opts) and checkRegions({ eu: pool, ... }, opts) => { ok, failures }.
// Read-only: it never writes to a database.
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { RequestRecord } from './lib/request-log.ts';
import { readRequestLog } from './lib/request-log.ts';
import { isMain, runMain } from './lib/main.ts';
import { parseAccountId, parseHoldId, parseRegion, parseTransferId, regionOf, regionOfHold, regionOfTransfer } from '../src/domain/ids.ts';

/** pg.Pool, pg.Client and a pool client all fit: a test can check inside its own transaction. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: any[] }>;
}

export interface CheckOptions {
  /** The run's request log: an NDJSON path, or the records themselves. */
  requests?: string | Iterable<RequestRecord> | AsyncIterable<RequestRecord>;
  /** Wait up to this long for transfers in flight to settle before checking (0: do not wait). */
  settleTimeoutMs?: number;
  /** Which tables to check; auto checks every engine whose tables hold data. */
  engine?: 'auto' | 'geopay' | 'baseline';
  /** Messages kept per kind of failure; the rest are counted. */
  maxPerCheck?: number;
  /** Transfers younger than this must still have their idempotency key (the server's retention). */
  keyRetentionMs?: number;
  /** Journal rows read per round trip. */
  pageSize?: number;
}

export interface CheckResult {
  ok: boolean;
  failures: string[];
  /** What was found and not wrong: transfers left in flight, checks skipped. */
  notes: string[];
  engines: string[];
  stats: Record<string, number>;
}

/** Failures grouped by check, each group capped so one systematic bug does not flood the report. */
class Failures {
  constructor(
    private readonly cap: number,
    private readonly groups = new Map<string, { kept: string[]; more: number }>(),
    private readonly where = '',
  ) {}

  /** The same failures, each message opening with where it was found (a region's database). */
  within(where: string): Failures {
    return new Failures(this.cap, this.groups, `${where}: `);
  }

  add(check: string, message: string): void {
    const g = this.groups.get(check) ?? { kept: [], more: 0 };
    this.groups.set(check, g);
    if (g.kept.length < this.cap) g.kept.push(`${check}: ${this.where}${message}`);
    else g.more++;
  }

  list(): string[] {
    const out: string[] = [];
    for (const [check, g] of this.groups) {
      out.push(...g.kept);
      if (g.more > 0) out.push(`${check}: ... and ${g.more} more`);
    }
    return out;
  }

  get count(): number {
    return [...this.groups.values()].reduce((n, g) => n + g.kept.length + g.more, 0);
  }
}

/** Postings that move money, each for a transfer: its source leg (debit, or capture of a hold) and its credit or return. */
const MONEY_KINDS = new Set(['debit', 'credit', 'return', 'capture']);
/** Transfer states whose money is on its way: debited, not yet credited or returned. */
export const IN_FLIGHT = ['debited', 'refused'];
/** A transfer state can only move forward along these edges. */
const REACHABLE: Record<string, string[]> = {
  debited: ['debited', 'settled', 'refused', 'returned'],
  refused: ['refused', 'returned'],
  settled: ['settled'],
  returned: ['returned'],
};

async function tableExists(db: Queryable, name: string): Promise<boolean> {
  const { rows } = await db.query('SELECT to_regclass($1) IS NOT NULL AS present', [name]);
  return rows[0].present === true;
}

async function hasRows(db: Queryable, table: string): Promise<boolean> {
  const { rows } = await db.query(`SELECT EXISTS (SELECT 1 FROM ${table}) AS any`);
  return rows[0].any === true;
}

/** One check of one database: where failures, notes and stats go, and what the log acknowledged. */
interface CheckRun {
  db: Queryable;
  opts: CheckOptions;
  failures: Failures;
  notes: string[];
  stats: Record<string, number>;
  /** For the engine being checked; undefined without a request log. */
  acked: Map<string, Acknowledged> | undefined;
}

/** Checks the ledger invariants of every engine found in the database. */
export async function check(db: Queryable, opts: CheckOptions = {}): Promise<CheckResult> {
  const failures = new Failures(opts.maxPerCheck ?? 20);
  const notes: string[] = [];
  const stats: Record<string, number> = {};
  const engines: string[] = [];
  const want = opts.engine ?? 'auto';

  const acked = opts.requests === undefined ? undefined : await loadAcknowledged(opts.requests, failures, stats);

  const geopay = await tableExists(db, 'journal');
  const baseline = await tableExists(db, 'baseline_transfers');
  // A baseline server may run geopay's migrations too (or the other way round): an engine
  // whose tables are empty has nothing to check, unless it was asked for by name.
  const doGeopay = geopay && (want === 'geopay' || (want === 'auto' && (!baseline || (await hasRows(db, 'journal')))));
  const doBaseline = baseline && (want === 'baseline' || (want === 'auto' && (!geopay || (await hasRows(db, 'baseline_transfers')))));
  if (want === 'geopay' && !geopay) failures.add('schema', 'no geopay tables (journal) in this database');
  if (want === 'baseline' && !baseline) failures.add('schema', 'no baseline tables (baseline_transfers) in this database');
  if (want === 'auto' && !geopay && !baseline) failures.add('schema', 'neither geopay (journal) nor baseline (baseline_transfers) tables in this database');

  // Both engines in one database: each acknowledged transfer is looked for in the ledger of
  // the engine that answered it (the log says which); with one engine, in that one.
  const ackedBy = (engine: string): Map<string, Acknowledged> | undefined =>
    acked && doGeopay && doBaseline ? new Map([...acked].filter(([, a]) => a.engine === engine)) : acked;
  const run = { db, opts, failures, notes, stats };
  if (doGeopay) {
    engines.push('geopay');
    await checkGeopay({ ...run, acked: ackedBy('geopay') });
  }
  if (doBaseline) {
    engines.push('baseline');
    await checkBaseline({ ...run, acked: ackedBy('baseline') });
  }
  if (acked && !doGeopay && !doBaseline && acked.size > 0) {
    failures.add('acknowledged', `${acked.size} acknowledged transfers in the request log, and no ledger with rows to find them in`);
  }
  const list = failures.list();
  return { ok: failures.count === 0, failures: list, notes, engines, stats };
}

// ---------------------------------------------------------------------------------------------
// The request log: what the client was told.

export interface Acknowledged {
  transferId: string;
  /** The engine the log says answered (geopay or baseline). */
  engine: string;
  tenant: string;
  key: string;
  op: string;
  status: number;
  /** The transfer's state in the answer. */
  state: string | undefined;
  body: Record<string, unknown>;
}

// Requests whose 2xx answer is a transfer: captures and refunds create one of their own.
const MONEY_OPS = new Set(['transfer', 'deposit', 'withdraw', 'capture', 'refund']);

/**
 * Reads the log into the acknowledged transfers (last 2xx answer per key) and checks what
 * the log alone can show: one key never answers two transfers, nor a transfer and a refusal.
 */
async function loadAcknowledged(
  source: NonNullable<CheckOptions['requests']>,
  failures: Failures,
  stats: Record<string, number>,
): Promise<Map<string, Acknowledged>> {
  const records: AsyncIterable<RequestRecord> | Iterable<RequestRecord> = typeof source === 'string' ? readRequestLog(source) : source;
  const byKey = new Map<string, Acknowledged & { answers: string[] }>();
  const refusedKeys = new Map<string, string>();
  let lines = 0;
  for await (const r of records) {
    lines++;
    if (!MONEY_OPS.has(r.op) || r.status === null) continue;
    const k = `${r.tenant}\u0000${r.key}`;
    if (r.status === 201 || r.status === 202) {
      const a = r.answer as { id?: unknown; state?: unknown } | null;
      const id = typeof a?.id === 'string' ? a.id : undefined;
      if (!id) {
        failures.add('request log', `key ${r.key} answered ${r.status} without a transfer id: ${JSON.stringify(r.answer).slice(0, 200)}`);
        continue;
      }
      const prev = byKey.get(k);
      if (prev && prev.transferId !== id) {
        failures.add('idempotency', `key ${r.key} (tenant ${r.tenant}) answered two transfers: ${prev.transferId} and ${id} (attempt ${r.attempt})`);
        continue;
      }
      const state = typeof a?.state === 'string' ? a.state : undefined;
      byKey.set(k, {
        transferId: id, engine: r.engine, tenant: r.tenant, key: r.key, op: r.op, status: r.status, state,
        body: (r.body ?? {}) as Record<string, unknown>, answers: [...(prev?.answers ?? []), `${r.status}`],
      });
    } else if (r.status === 422) {
      // A refusal of the very request another attempt saw accepted (business code or
      // key_reused): a replay must answer what the first execution answered. Other 4xx (409
      // in progress, 429 rate limited) say nothing was decided yet.
      const code = (r.answer as { code?: string } | null)?.code ?? String(r.status);
      refusedKeys.set(k, code);
    }
  }
  for (const [k, code] of refusedKeys) {
    const a = byKey.get(k);
    if (a) failures.add('idempotency', `key ${a.key} (tenant ${a.tenant}) answered transfer ${a.transferId} and, on another attempt, ${code}`);
  }
  const out = new Map<string, Acknowledged>();
  for (const a of byKey.values()) {
    const { answers: _answers, ...rest } = a;
    out.set(a.transferId, rest);
  }
  stats.requestLogLines = lines;
  stats.acknowledgedTransfers = out.size;
  return out;
}

// ---------------------------------------------------------------------------------------------
// geopay: journal, transfers, snapshots, shards, idempotency_keys.

/** Waits (bounded) until no row of `table` is in one of `states`; how many still are. */
export async function settle(db: Queryable, table: string, states: string[], timeoutMs: number, notes: string[]): Promise<number> {
  const count = async (): Promise<number> =>
    Number((await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE state = ANY($1)`, [states])).rows[0].n);
  const deadline = Date.now() + timeoutMs;
  let n = await count();
  while (n > 0 && Date.now() < deadline) {
    await sleep(Math.min(250, deadline - Date.now()));
    n = await count();
  }
  if (n > 0) notes.push(`${n} transfers still in flight in ${table} after waiting ${timeoutMs} ms: checked as in flight`);
  return n;
}

interface AccountRow { kind: string; currency: string; overdraft: bigint; shard: string }
interface SnapshotRow { seq: bigint; balance: bigint | undefined; held: bigint | undefined; stateSeq: unknown }

/** What the replay holds each posting against: the accounts, the shards' epochs, the snapshots. */
interface GeopayState {
  accounts: Map<string, AccountRow>;
  shardEpoch: Map<string, bigint>;
  snapshots: Map<string, SnapshotRow>;
}

async function loadGeopayState(db: Queryable): Promise<GeopayState> {
  const accounts = new Map<string, AccountRow>();
  for (const r of (await db.query('SELECT id, kind, currency, overdraft_limit::text AS o, shard FROM accounts')).rows) {
    accounts.set(r.id, { kind: r.kind, currency: r.currency, overdraft: BigInt(r.o), shard: r.shard });
  }
  const shardEpoch = new Map<string, bigint>();
  for (const r of (await db.query('SELECT id, epoch::text AS e FROM shards')).rows) shardEpoch.set(r.id, BigInt(r.e));
  const snapshots = new Map<string, SnapshotRow>();
  for (const r of (await db.query("SELECT account_id, seq::text AS seq, state->>'balance' AS balance, state->>'held' AS held, state->'seq' AS state_seq FROM snapshots")).rows) {
    snapshots.set(r.account_id, {
      seq: BigInt(r.seq), balance: r.balance === null ? undefined : BigInt(r.balance),
      held: r.held === null ? undefined : BigInt(r.held), stateSeq: r.state_seq,
    });
  }
  return { accounts, shardEpoch, snapshots };
}

/** One journal row, parsed. */
interface Posting {
  accountId: string; seq: bigint; kind: string; transferId: string | null; holdId: string | null;
  amount: bigint; balanceAfter: bigint; epoch: bigint; heldDelta: bigint; heldAfter: bigint;
}

/** The account being replayed: what its journal has added up to so far. */
interface Cursor {
  id: string; account: AccountRow | undefined; expected: bigint; balance: bigint; held: bigint; epoch: bigint | undefined;
  lastSeq: bigint;
  /** Kinds of fault already reported for this account: the first place it shows is the one to read. */
  reported: Set<string>;
}

/** Replays every account's journal in seq order, posting by posting, checking each as it comes. */
class JournalReplay {
  /** Sum of all postings per currency. */
  readonly ledger = new Map<string, bigint>();
  /** Held total at each account's last seq, where not 0. */
  readonly finalHeld = new Map<string, bigint>();
  postings = 0;
  private cur: Cursor | undefined;

  constructor(private readonly state: GeopayState, private readonly failures: Failures) {}

  add(p: Posting): void {
    this.postings++;
    if (!this.cur || this.cur.id !== p.accountId) this.enter(p);
    const a = this.cur!;
    this.checkSeq(a, p);
    const shapeFault = postingShape(p.kind, p.amount, p.heldDelta, p.transferId, p.holdId);
    if (shapeFault) this.failures.add('posting', `account ${a.id} seq ${p.seq}: ${shapeFault}`);
    this.checkBalances(a, p);
    this.checkEpoch(a, p);
    this.checkSnapshot(a, p);
    const currency = a.account?.currency ?? '???';
    this.ledger.set(currency, (this.ledger.get(currency) ?? 0n) + p.amount);
  }

  /** Ends the last account. */
  finish(): void {
    this.closeAccount();
  }

  private enter(p: Posting): void {
    this.closeAccount();
    const account = this.state.accounts.get(p.accountId);
    this.cur = { id: p.accountId, account, expected: 1n, balance: 0n, held: 0n, epoch: undefined, lastSeq: 0n, reported: new Set() };
    if (!account) this.failures.add('accounts', `account ${p.accountId} seq ${p.seq}: postings for an account that has no row in accounts`);
  }

  private closeAccount(): void {
    const a = this.cur;
    if (!a) return;
    if (a.held !== 0n) this.finalHeld.set(a.id, a.held);
    const snap = this.state.snapshots.get(a.id);
    if (snap && snap.seq > a.lastSeq) {
      this.failures.add('snapshot', `account ${a.id}: snapshot at seq ${snap.seq}, beyond its journal (last seq ${a.lastSeq})`);
    }
  }

  private once(a: Cursor, what: string, check: string, message: string): void {
    if (a.reported.has(what)) return;
    a.reported.add(what);
    this.failures.add(check, message);
  }

  private checkSeq(a: Cursor, p: Posting): void {
    if (p.seq !== a.expected) {
      this.once(a, `gap${a.expected}`, 'seq', a.expected === 1n
        ? `account ${a.id}: journal starts at seq ${p.seq}, not 1`
        : `account ${a.id}: seq ${p.seq} follows seq ${a.expected - 1n} (missing ${a.expected === p.seq - 1n ? `seq ${a.expected}` : `seq ${a.expected}..${p.seq - 1n}`})`);
    }
    a.expected = p.seq + 1n;
    a.lastSeq = p.seq;
  }

  /** The running sums against balance_after and held_after, and against the overdraft limit. */
  private checkBalances(a: Cursor, p: Posting): void {
    a.balance += p.amount;
    if (a.balance !== p.balanceAfter) {
      this.once(a, 'replay', 'replay', `account ${a.id} seq ${p.seq}: balance_after is ${p.balanceAfter}, replaying the journal gives ${a.balance}`);
      // Resynchronise, so one bad row is one message and later rows are judged on their own.
      a.balance = p.balanceAfter;
    }
    a.held += p.heldDelta;
    if (a.held !== p.heldAfter) {
      this.once(a, 'held', 'replay', `account ${a.id} seq ${p.seq}: held_after is ${p.heldAfter}, replaying the journal gives ${a.held}`);
      a.held = p.heldAfter;
    }
    if (a.held < 0n) this.once(a, 'held-negative', 'holds', `account ${a.id} seq ${p.seq}: held total ${a.held} is negative`);
    if (a.account && a.account.kind !== 'external' && !a.id.startsWith('ext_')) {
      if (a.balance < -a.account.overdraft) {
        this.once(a, 'overdraft', 'overdraft', `account ${a.id} seq ${p.seq}: balance ${a.balance} is below -overdraft_limit (-${a.account.overdraft})`);
      } else if (a.balance - a.held < -a.account.overdraft && p.heldDelta > 0n) {
        // Only a new hold can make this so (a debit is refused when available is short).
        this.once(a, 'available', 'overdraft', `account ${a.id} seq ${p.seq}: balance ${a.balance} less held ${a.held} is below -overdraft_limit (-${a.account.overdraft}): a hold reserved money the account did not have`);
      }
    }
  }

  private checkEpoch(a: Cursor, p: Posting): void {
    if (a.epoch !== undefined && p.epoch < a.epoch) {
      this.once(a, 'epoch-back', 'epoch', `account ${a.id} seq ${p.seq}: epoch ${p.epoch} after epoch ${a.epoch} (went backwards)`);
    }
    a.epoch = a.epoch === undefined || p.epoch > a.epoch ? p.epoch : a.epoch;
    if (!a.account) return;
    const current = this.state.shardEpoch.get(a.account.shard);
    if (current === undefined) this.once(a, 'no-shard', 'epoch', `account ${a.id} seq ${p.seq}: its shard ${a.account.shard} has no row in shards`);
    else if (p.epoch > current) this.once(a, 'epoch-future', 'epoch', `account ${a.id} seq ${p.seq}: epoch ${p.epoch} is beyond shard ${a.account.shard}'s current epoch ${current}`);
  }

  private checkSnapshot(a: Cursor, p: Posting): void {
    const snap = this.state.snapshots.get(a.id);
    if (!snap || snap.seq !== p.seq) return;
    if (snap.balance !== p.balanceAfter) {
      this.failures.add('snapshot', `account ${a.id} seq ${p.seq}: snapshot balance ${snap.balance ?? 'missing'}, journal balance ${p.balanceAfter} at that seq`);
    }
    if (snap.held !== undefined && snap.held !== p.heldAfter) {
      this.failures.add('snapshot', `account ${a.id} seq ${p.seq}: snapshot held ${snap.held}, journal held ${p.heldAfter} at that seq`);
    }
    if (String(snap.stateSeq) !== String(p.seq)) this.failures.add('snapshot', `account ${a.id} seq ${p.seq}: snapshot row at seq ${p.seq} holds a state at seq ${String(snap.stateSeq)}`);
  }
}

/** Feeds the whole journal to a replay, one page at a time (keyset on the primary key). */
async function replayJournal(run: CheckRun, state: GeopayState, holdsSchema: boolean): Promise<JournalReplay> {
  const replay = new JournalReplay(state, run.failures);
  const heldCols = holdsSchema ? 'hold_id, held_delta::text AS held_delta, held_after::text AS held_after' : "NULL AS hold_id, '0' AS held_delta, '0' AS held_after";
  const pageSize = run.opts.pageSize ?? 20_000;
  let after: [string, string] = ['', '0'];
  for (;;) {
    const { rows } = await run.db.query(
      `SELECT account_id, seq::text AS seq, kind, transfer_id, amount::text AS amount, balance_after::text AS balance_after,
              epoch::text AS epoch, ${heldCols}
         FROM journal j WHERE (j.account_id, j.seq) > ($1, $2::bigint) ORDER BY j.account_id, j.seq LIMIT $3`,
      [after[0], after[1], pageSize],
    );
    for (const r of rows) {
      replay.add({
        accountId: r.account_id, seq: BigInt(r.seq), kind: r.kind, transferId: r.transfer_id, holdId: r.hold_id, amount: BigInt(r.amount),
        balanceAfter: BigInt(r.balance_after), epoch: BigInt(r.epoch), heldDelta: BigInt(r.held_delta), heldAfter: BigInt(r.held_after),
      });
    }
    if (rows.length < pageSize) break;
    const last = rows[rows.length - 1]!;
    after = [last.account_id, last.seq];
  }
  replay.finish();
  return replay;
}

/** Snapshots the replay never reached: of accounts that do not exist, or with no postings at all. */
async function checkStraySnapshots(run: CheckRun, state: GeopayState): Promise<void> {
  for (const [id, s] of state.snapshots) {
    if (!state.accounts.has(id)) run.failures.add('snapshot', `account ${id}: snapshot at seq ${s.seq} of an account with no row in accounts`);
  }
  for (const r of (await run.db.query('SELECT account_id FROM snapshots s WHERE NOT EXISTS (SELECT 1 FROM journal j WHERE j.account_id = s.account_id)')).rows) {
    run.failures.add('snapshot', `account ${r.account_id}: snapshot at seq ${state.snapshots.get(r.account_id)?.seq} but no postings`);
  }
}

/**
 * Every posting of every account (external ones included) plus the transfers whose debit is
 * not yet matched by a credit or return sums to zero, per currency.
 */
async function checkLedgerSum(run: CheckRun, ledger: Map<string, bigint>): Promise<void> {
  const inFlight = new Map<string, bigint>();
  let inFlightCount = 0;
  for (const r of (await run.db.query(
    // A cross-region credit lands before its source settles the row: that money has arrived.
    `SELECT currency, sum(amount)::text AS s, count(*)::int AS n FROM transfers t WHERE state = ANY($1)
       AND NOT (state = 'debited' AND EXISTS (SELECT 1 FROM journal j WHERE j.transfer_id = t.id AND j.kind = 'credit'))
     GROUP BY currency`, [IN_FLIGHT],
  )).rows) {
    inFlight.set(r.currency, BigInt(r.s));
    inFlightCount += r.n;
  }
  run.stats.inFlight = inFlightCount;
  compareLedger(run.failures, ledger, inFlight);
}

/** Per currency, the postings and the money in flight cancel out. */
function compareLedger(failures: Failures, ledger: Map<string, bigint>, inFlight: Map<string, bigint>): void {
  for (const currency of new Set([...ledger.keys(), ...inFlight.keys()])) {
    const j = ledger.get(currency) ?? 0n;
    const f = inFlight.get(currency) ?? 0n;
    if (j + f !== 0n) {
      failures.add('ledger', `${currency}: postings sum to ${j} and transfers in flight to ${f}: ${j + f}, not 0 (the transfer checks below name the postings)`);
    }
  }
}

/** What the checks local to one database found, for the checks that come after them. */
interface LocalCheck { state: GeopayState; replay: JournalReplay; holdsSchema: boolean }

/** The checks one database answers alone, first part: every account's journal replayed. */
async function checkJournals(run: CheckRun): Promise<LocalCheck> {
  const { db, stats } = run;
  const state = await loadGeopayState(db);
  stats.accounts = state.accounts.size;
  stats.snapshots = state.snapshots.size;
  // Holds arrived with migration 003; a database from before has no such columns.
  const holdsSchema = (await columns(db, 'journal')).has('held_after');
  const replay = await replayJournal(run, state, holdsSchema);
  await checkStraySnapshots(run, state);
  stats.postings = replay.postings;
  return { state, replay, holdsSchema };
}

/** The checks one database answers alone, second part: holds against the journal, and keys. */
async function checkBookkeeping(run: CheckRun, local: LocalCheck): Promise<void> {
  const { db, opts, failures, stats } = run;
  if (local.holdsSchema && (await tableExists(db, 'holds'))) await checkHolds(db, local.replay.finalHeld, failures, stats);
  await checkKeys(db, opts, failures);
}

async function checkGeopay(run: CheckRun): Promise<void> {
  const { db, opts, failures, stats } = run;
  if ((opts.settleTimeoutMs ?? 0) > 0) await settle(db, 'transfers', IN_FLIGHT, opts.settleTimeoutMs!, run.notes);
  const local = await checkJournals(run);
  await checkLedgerSum(run, local.replay.ledger);
  await checkTransferLegs(db, failures, stats);
  await checkBookkeeping(run, local);
  if (run.acked) await checkAcknowledged(db, run.acked, failures, 'transfers');
}

interface LegRow {
  id: string; kind: string; state: string; amount: string; source_id: string; destination_id: string;
  debits: number; good_debits: number; credits: number; good_credits: number; returns: number; good_returns: number;
  others: number; legs: { account: string; seq: string; kind: string; amount: string; db?: string }[] | null;
  /** How to show the state, where it is not the stored one (across databases: credited, outcome on its way). */
  shownState?: string;
}

/** Each transfer: one debit of its source; a credit or return at most once, exactly once when terminal. */
async function checkTransferLegs(db: Queryable, failures: Failures, stats: Record<string, number>): Promise<void> {
  const { rows: counts } = await db.query('SELECT state, count(*)::int AS n FROM transfers GROUP BY state');
  for (const r of counts) stats[`transfers_${r.state}`] = r.n;

  const { rows } = await db.query(`
    SELECT * FROM (
      SELECT t.id, t.kind, t.state, t.amount::text AS amount, t.source_id, t.destination_id,
        count(j.seq) FILTER (WHERE j.kind IN ('debit', 'capture'))::int AS debits,
        count(j.seq) FILTER (WHERE j.kind = CASE WHEN t.kind = 'capture' THEN 'capture' ELSE 'debit' END
                               AND j.account_id = t.source_id AND j.amount = -t.amount)::int AS good_debits,
        count(j.seq) FILTER (WHERE j.kind = 'credit')::int AS credits,
        count(j.seq) FILTER (WHERE j.kind = 'credit' AND j.account_id = t.destination_id AND j.amount = t.amount)::int AS good_credits,
        count(j.seq) FILTER (WHERE j.kind = 'return')::int AS returns,
        count(j.seq) FILTER (WHERE j.kind = 'return' AND j.account_id = t.source_id AND j.amount = t.amount)::int AS good_returns,
        count(j.seq) FILTER (WHERE j.kind NOT IN ('debit', 'capture', 'credit', 'return'))::int AS others,
        json_agg(json_build_object('account', j.account_id, 'seq', j.seq::text, 'kind', j.kind, 'amount', j.amount::text)
                 ORDER BY j.account_id, j.seq) FILTER (WHERE j.seq IS NOT NULL) AS legs
      FROM transfers t LEFT JOIN journal j ON j.transfer_id = t.id
      GROUP BY t.id
    ) x
    WHERE NOT (debits = 1 AND good_debits = 1 AND others = 0 AND CASE state
      WHEN 'settled' THEN credits = 1 AND good_credits = 1 AND returns = 0
      WHEN 'returned' THEN returns = 1 AND good_returns = 1 AND credits = 0
      ELSE credits = 0 AND returns = 0 END)
    LIMIT 1000`);
  for (const t of rows as LegRow[]) describeLegs(t, failures, await lastSeqs(db, [t.source_id, t.destination_id]));

  const { rows: orphans } = await db.query(`
    SELECT account_id, seq::text AS seq, kind, transfer_id FROM journal j
     WHERE transfer_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.id = j.transfer_id)
     ORDER BY j.account_id, j.seq LIMIT 200`);
  for (const o of orphans) {
    failures.add('transfer', `account ${o.account_id} seq ${o.seq}: ${o.kind} posting for ${o.transfer_id}, which is not in transfers`);
  }
}

async function lastSeqs(db: Queryable, ids: string[]): Promise<Map<string, string>> {
  const { rows } = await db.query('SELECT account_id, max(seq)::text AS seq FROM journal WHERE account_id = ANY($1) GROUP BY account_id', [ids]);
  return new Map(rows.map((r) => [r.account_id as string, r.seq as string]));
}

function describeLegs(t: LegRow, failures: Failures, last: Map<string, string>): void {
  const legs = t.legs ?? [];
  const at = (kind: string): string => legs.filter((l) => l.kind === kind || (kind === 'debit' && l.kind === 'capture'))
    .map((l) => `${l.account} seq ${l.seq}${l.db ? ` in ${l.db}` : ''} (${l.kind} ${l.amount})`).join(', ');
  const end = (id: string): string => `its journal ends at seq ${last.get(id) ?? 'none'}`;
  const name = `${t.kind} ${t.id} (${t.shownState ?? t.state}, ${t.amount} from ${t.source_id} to ${t.destination_id})`;
  const leg = t.kind === 'capture' ? 'capture' : 'debit';
  if (t.debits === 0) failures.add('transfer', `${name}: no ${leg} posting on account ${t.source_id} (${end(t.source_id)})`);
  else if (t.debits > 1) failures.add('transfer', `${name}: debited ${t.debits} times: ${at('debit')}`);
  else if (t.good_debits !== 1) failures.add('transfer', `${name}: its source leg ${at('debit')} is not a ${leg} of -${t.amount} on account ${t.source_id}`);
  if (t.credits > 1) failures.add('transfer', `${name}: credited ${t.credits} times: ${at('credit')}`);
  if (t.returns > 1) failures.add('transfer', `${name}: returned ${t.returns} times: ${at('return')}`);
  if (t.credits > 0 && t.returns > 0) failures.add('transfer', `${name}: both credited (${at('credit')}) and returned (${at('return')})`);
  if (t.state === 'settled' && t.credits === 0) failures.add('transfer', `${name}: settled, but no credit posting on account ${t.destination_id} (${end(t.destination_id)})`);
  if (t.state === 'returned' && t.returns === 0) failures.add('transfer', `${name}: returned, but no return posting on account ${t.source_id} (${end(t.source_id)})`);
  if (t.credits === 1 && t.good_credits !== 1) failures.add('transfer', `${name}: its credit ${at('credit')} is not +${t.amount} on account ${t.destination_id}`);
  if (t.returns === 1 && t.good_returns !== 1) failures.add('transfer', `${name}: its return ${at('return')} is not +${t.amount} on account ${t.source_id}`);
  // Between regions the credit commits first and the source's row settles after it.
  const awaitingSettle = t.state === 'debited' && transferRegion(t.id) !== accountRegion(t.destination_id);
  if (t.state !== 'settled' && t.credits > 0 && !awaitingSettle) failures.add('transfer', `${name}: state ${t.state}, yet credited at ${at('credit')}`);
  if (t.state !== 'returned' && t.returns > 0) failures.add('transfer', `${name}: state ${t.state}, yet returned at ${at('return')}`);
  if (t.others > 0) failures.add('transfer', `${name}: non-money postings carry its id: ${legs.filter((l) => !MONEY_KINDS.has(l.kind)).map((l) => `${l.account} seq ${l.seq} (${l.kind})`).join(', ')}`);
}

/** What is wrong with one posting taken alone (sign of amount and held change, ids it must carry), if anything. */
function postingShape(kind: string, amount: bigint, heldDelta: bigint, transferId: string | null, holdId: string | null): string | undefined {
  const ok = ((): boolean => {
    switch (kind) {
      case 'open': case 'freeze': case 'unfreeze': case 'close': return amount === 0n && heldDelta === 0n;
      case 'debit': return amount < 0n && heldDelta === 0n && transferId !== null;
      case 'credit': case 'return': return amount > 0n && heldDelta === 0n && transferId !== null;
      // A capture spends held money: the held total drops by the amount and any released rest.
      case 'capture': return amount < 0n && heldDelta <= amount && transferId !== null && holdId !== null;
      case 'hold': return amount === 0n && heldDelta > 0n && holdId !== null;
      case 'release': return amount === 0n && heldDelta < 0n && holdId !== null;
      default: return false;
    }
  })();
  if (ok) return undefined;
  const ids = [transferId ? `transfer ${transferId}` : '', holdId ? `hold ${holdId}` : ''].filter(Boolean).join(', ') || 'no transfer or hold';
  return `a ${kind} posting of amount ${amount}, held change ${heldDelta} (${ids}) is not a valid ${kind}`;
}

/** The held total left on each account equals what its active holds still reserve. */
async function checkHolds(db: Queryable, finalHeld: Map<string, bigint>, failures: Failures, stats: Record<string, number>): Promise<void> {
  const { rows } = await db.query(
    "SELECT source_id, sum(amount - captured)::text AS reserved, count(*)::int AS n FROM holds WHERE state = 'held' GROUP BY source_id",
  );
  const reserved = new Map<string, bigint>(rows.map((r) => [r.source_id as string, BigInt(r.reserved)]));
  stats.activeHolds = rows.reduce((n, r) => n + (r.n as number), 0);
  for (const id of new Set([...reserved.keys(), ...finalHeld.keys()])) {
    const journal = finalHeld.get(id) ?? 0n;
    const table = reserved.get(id) ?? 0n;
    if (journal !== table) {
      failures.add('holds', `account ${id}: the journal holds ${journal} at its last seq, its active holds reserve ${table}`);
    }
  }
}

/**
 * No transfer was applied without claiming its key (a key applied twice leaves such a twin).
 * Captures are left out: the expiry sweeper completes a committed linked group's captures on
 * its own, with no client key behind them.
 */
async function checkKeys(db: Queryable, opts: CheckOptions, failures: Failures): Promise<void> {
  const retentionMs = opts.keyRetentionMs ?? 86_400_000;
  // A set difference, not NOT EXISTS: resource_id has no index, and with one tenant the
  // planner may walk the (tenant_id, key) index per transfer, quadratic in the run's size.
  const { rows } = await db.query(`
    SELECT m.id, m.tenant_id, t.source_id FROM (
      SELECT tenant_id, id FROM transfers
       WHERE created_at > now() - make_interval(secs => $1::double precision / 1000)
         AND kind IN ('transfer', 'deposit', 'withdrawal', 'refund')
      EXCEPT SELECT tenant_id, resource_id FROM idempotency_keys WHERE resource_id IS NOT NULL) m
    JOIN transfers t ON t.id = m.id
    ORDER BY m.id LIMIT 200`, [retentionMs]);
  for (const r of rows) {
    failures.add('idempotency', `transfer ${r.id} (tenant ${r.tenant_id}, source ${r.source_id}) has no idempotency key: it was applied without claiming one`);
  }
  const { rows: shared } = await db.query(`
    SELECT resource_id, count(*)::int AS n, min(key) AS a, max(key) AS b FROM idempotency_keys
     WHERE resource_id LIKE 'tr\\_%' GROUP BY resource_id HAVING count(*) > 1 LIMIT 200`);
  for (const r of shared) failures.add('idempotency', `transfer ${r.resource_id} is claimed by ${r.n} keys (${r.a}, ${r.b})`);
}

/** Every acknowledged transfer is in the database as asked, in a state its answer allows. */
async function checkAcknowledged(db: Queryable, acked: Map<string, Acknowledged>, failures: Failures, table: 'transfers' | 'baseline_transfers'): Promise<void> {
  const ids = [...acked.keys()];
  for (let i = 0; i < ids.length; i += 5_000) {
    const chunk = ids.slice(i, i + 5_000);
    const { rows } = await db.query(
      `SELECT id, kind, source_id, destination_id, amount::text AS amount, currency, state FROM ${table} WHERE id = ANY($1)`, [chunk],
    );
    const found = new Map(rows.map((r) => [r.id as string, r]));
    for (const id of chunk) {
      const a = acked.get(id)!;
      const t = found.get(id);
      const who = `acknowledged ${a.op} ${id} (key ${a.key}, answered ${a.status}${a.state ? ` ${a.state}` : ''})`;
      if (!t) {
        failures.add('acknowledged', `${who} is not in ${table}: an acknowledged payment was lost`);
        continue;
      }
      const b = a.body;
      const mismatch: string[] = [];
      if (b.amount !== undefined && String(b.amount) !== t.amount) mismatch.push(`amount ${t.amount}, asked ${String(b.amount)}`);
      if (b.currency !== undefined && String(b.currency) !== String(t.currency).trim()) mismatch.push(`currency ${t.currency}, asked ${String(b.currency)}`);
      if (a.op === 'transfer') {
        if (b.sourceAccountId !== t.source_id) mismatch.push(`source ${t.source_id}, asked ${String(b.sourceAccountId)}`);
        if (b.destinationAccountId !== t.destination_id) mismatch.push(`destination ${t.destination_id}, asked ${String(b.destinationAccountId)}`);
      } else if (a.op === 'deposit' && b.accountId !== t.destination_id) {
        mismatch.push(`destination ${t.destination_id}, asked ${String(b.accountId)}`);
      } else if (a.op === 'withdraw' && b.accountId !== t.source_id) {
        mismatch.push(`source ${t.source_id}, asked ${String(b.accountId)}`);
      }
      if (mismatch.length > 0) failures.add('acknowledged', `${who} differs from its request: ${mismatch.join('; ')}`);
      if (a.state && REACHABLE[a.state] && !REACHABLE[a.state]!.includes(t.state)) {
        failures.add('acknowledged', `${who} is ${t.state} in the database, which cannot follow ${a.state}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// geopay with a database per region (issue 10): each region's database holds its own accounts,
// journal, snapshots and holds, and the transfers whose source is in it; a cross-region
// transfer's debit is in the source's journal, its credit in the destination's. What one
// database answers alone is checked in each, as above; the money is checked over all of them,
// and residency (every row of database R belongs to region R) in each.

/** One region's database under check: its own notes and stats, its failures named by region. */
interface RegionRun extends CheckRun { region: string }

/** A transfer row, and the database it was found in. */
interface BookTransfer {
  region: string; id: string; kind: string; state: string; amount: string; currency: string; source_id: string; destination_id: string;
}
/** A posting that carries a transfer id, and the database whose journal holds it. */
interface BookLeg { region: string; transfer_id: string; account: string; seq: string; kind: string; amount: string }

/** Every transfer row and every posting naming a transfer, of every region's database. */
interface TransferBook { transfers: Map<string, BookTransfer[]>; legs: Map<string, BookLeg[]> }

/**
 * Checks a cluster whose regions each own a database (`{ eu: pool, us: pool }`). The
 * checker expects a quiet cluster (after the run, after the settle wait): no read spans
 * the databases at one instant, so a transfer moving while it reads can look wrong.
 */
export async function checkRegions(dbs: Record<string, Queryable>, opts: CheckOptions = {}): Promise<CheckResult> {
  const failures = new Failures(opts.maxPerCheck ?? 20);
  const notes: string[] = [`regions checked: ${Object.keys(dbs).join(', ') || 'none'}`];
  const stats: Record<string, number> = {};
  const acked = opts.requests === undefined ? undefined : await loadAcknowledged(opts.requests, failures, stats);
  const runs = await regionRuns(dbs, opts, failures);
  if ((opts.settleTimeoutMs ?? 0) > 0) {
    await Promise.all(runs.map((r) => settle(r.db, 'transfers', IN_FLIGHT, opts.settleTimeoutMs!, r.notes)));
  }
  const locals: LocalCheck[] = [];
  for (const run of runs) {
    const local = await checkJournals(run);
    locals.push(local);
    await checkResidency(run, local);
  }
  const book = await loadTransferBook(runs);
  checkTransferHomes(book, failures);
  const ledger = new Map<string, bigint>();
  for (const { replay } of locals) for (const [c, s] of replay.ledger) ledger.set(c, (ledger.get(c) ?? 0n) + s);
  compareLedger(failures, ledger, moneyInFlight(book, stats));
  await checkLegsAcross(book, runs, failures, stats);
  for (const [i, run] of runs.entries()) await checkBookkeeping(run, locals[i]!);
  if (acked) await checkAcknowledgedByRegion(runs, acked, failures);
  for (const run of runs) {
    notes.push(...run.notes.map((n) => `${run.region}: ${n}`));
    for (const [k, v] of Object.entries(run.stats)) stats[k] = (stats[k] ?? 0) + v;
  }
  stats.regions = runs.length;
  return { ok: failures.count === 0, failures: failures.list(), notes, engines: runs.length > 0 ? ['geopay'] : [], stats };
}

/** The regions whose database has geopay's tables; the others are failures. */
async function regionRuns(dbs: Record<string, Queryable>, opts: CheckOptions, failures: Failures): Promise<RegionRun[]> {
  const runs: RegionRun[] = [];
  for (const [region, db] of Object.entries(dbs)) {
    if (parseRegion(region) === undefined) failures.add('schema', `"${region}" is not a region name`);
    else if (!(await tableExists(db, 'journal'))) failures.add('schema', `${region}: no geopay tables (journal) in this database`);
    else runs.push({ region, db, opts, failures: failures.within(region), notes: [], stats: {}, acked: undefined });
  }
  if (runs.length === 0 && Object.keys(dbs).length === 0) failures.add('schema', 'no region databases given');
  return runs;
}

/** The region an id of database rows names, or undefined when the id names none. */
function regionNamed(id: string, parse: (raw: unknown) => string | undefined, regionOfId: (id: never) => string): string | undefined {
  const parsed = parse(id);
  return parsed === undefined ? undefined : regionOfId(parsed as never);
}

const accountRegion = (id: string): string | undefined => regionNamed(id, parseAccountId, regionOf);
const transferRegion = (id: string): string | undefined => regionNamed(id, parseTransferId, regionOfTransfer);

/** Residency: every account, snapshot, journal row and hold of region R's database belongs to R. */
async function checkResidency({ region, db, failures }: RegionRun, local: LocalCheck): Promise<void> {
  const foreign = (named: string | undefined): string => (named === undefined ? 'its id names no region' : `its id names region ${named}, not ${region}`);
  for (const id of local.state.accounts.keys()) {
    const named = accountRegion(id);
    if (named !== region) failures.add('residency', `account row ${id}: ${foreign(named)}`);
  }
  for (const id of local.state.snapshots.keys()) {
    const named = accountRegion(id);
    if (named !== region) failures.add('residency', `snapshot of account ${id}: ${foreign(named)}`);
  }
  const { rows } = await db.query('SELECT account_id, min(seq)::text AS first, max(seq)::text AS last, count(*)::int AS n FROM journal GROUP BY account_id');
  for (const r of rows) {
    const named = accountRegion(r.account_id);
    if (named !== region) {
      failures.add('residency', `account ${r.account_id} seq ${r.first}..${r.last}: ${r.n} posting(s) in this journal, ${foreign(named)}`);
    }
  }
  if (!(await tableExists(db, 'holds'))) return;
  for (const r of (await db.query('SELECT id FROM holds')).rows) {
    const named = regionNamed(r.id, parseHoldId, regionOfHold);
    if (named !== region) failures.add('residency', `hold ${r.id}: ${foreign(named)}`);
  }
}

/** Every row of a keyset-paged query: `sql` reads the last key seen from $1.., the page size from the last parameter. */
async function pagedRows(db: Queryable, sql: string, start: unknown[], keyOf: (row: any) => unknown[], pageSize: number): Promise<any[]> {
  const out: any[] = [];
  let after = start;
  for (;;) {
    const { rows } = await db.query(sql, [...after, pageSize]);
    out.push(...rows);
    if (rows.length < pageSize) return out;
    after = keyOf(rows[rows.length - 1]);
  }
}

/**
 * Reads every transfer row and every posting that names a transfer from every database. The
 * transfers come first: a settle that races the read then looks in flight, never lost.
 */
async function loadTransferBook(runs: RegionRun[]): Promise<TransferBook> {
  const book: TransferBook = { transfers: new Map(), legs: new Map() };
  const pageSize = runs[0]?.opts.pageSize ?? 20_000;
  for (const { region, db } of runs) {
    const rows = await pagedRows(db, `
      SELECT id, kind, state, amount::text AS amount, currency, source_id, destination_id FROM transfers
       WHERE id > $1 ORDER BY id LIMIT $2`, [''], (r) => [r.id], pageSize);
    for (const r of rows) push(book.transfers, r.id, { region, ...r, currency: String(r.currency).trim() });
  }
  for (const { region, db } of runs) {
    const rows = await pagedRows(db, `
      SELECT transfer_id, account_id AS account, seq::text AS seq, kind, amount::text AS amount FROM journal
       WHERE transfer_id IS NOT NULL AND (account_id, seq) > ($1, $2::bigint) ORDER BY account_id, seq LIMIT $3`,
    ['', '0'], (r) => [r.account, r.seq], pageSize);
    for (const r of rows) push(book.legs, r.transfer_id, { region, ...r });
  }
  return book;
}

function push<V>(map: Map<string, V[]>, key: string, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** The row that speaks for a transfer: the one in its home region's database, else the first found. */
function homeRow(id: string, rows: BookTransfer[]): BookTransfer {
  return rows.find((r) => r.region === transferRegion(id)) ?? rows[0]!;
}

/** Each transfer is in one database's transfers, its id's region's; each posting's transfer is in one. */
function checkTransferHomes(book: TransferBook, failures: Failures): void {
  for (const [id, rows] of book.transfers) {
    const home = transferRegion(id);
    if (rows.length > 1) failures.add('transfer', `transfer ${id} is in the transfers of ${rows.map((r) => r.region).join(' and ')}: one transfer, two rows`);
    for (const r of rows) {
      if (r.region !== home) {
        failures.within(r.region).add('residency', `transfer ${id} (${r.source_id} to ${r.destination_id}): ${home === undefined ? 'its id names no region' : `its id names region ${home}, not ${r.region}`}`);
      }
    }
  }
  for (const [id, legs] of book.legs) {
    if (book.transfers.has(id)) continue;
    for (const l of legs) {
      failures.within(l.region).add('transfer', `account ${l.account} seq ${l.seq}: ${l.kind} posting for ${id}, which is in no region's transfers`);
    }
  }
}

/**
 * Money in flight, per currency: transfers debited (or refused) whose credit has landed in no
 * journal. The source's row stays `debited` until the outcome travels back, so a credit already
 * committed in the destination's database is money arrived, not money on its way.
 */
function moneyInFlight(book: TransferBook, stats: Record<string, number>): Map<string, bigint> {
  const inFlight = new Map<string, bigint>();
  stats.inFlight = 0;
  stats.creditedAwaitingOutcome = 0;
  for (const [id, rows] of book.transfers) {
    const t = homeRow(id, rows);
    if (!IN_FLIGHT.includes(t.state)) continue;
    if ((book.legs.get(id) ?? []).some((l) => l.kind === 'credit')) {
      stats.creditedAwaitingOutcome++;
      continue;
    }
    stats.inFlight++;
    inFlight.set(t.currency, (inFlight.get(t.currency) ?? 0n) + BigInt(t.amount));
  }
  return inFlight;
}

/** A transfer's legs gathered from every journal, counted the way checkTransferLegs counts them in one. */
function legRowAcross(t: BookTransfer, legs: BookLeg[]): LegRow {
  const is = (l: BookLeg, kind: string, account: string, amount: string): boolean => l.kind === kind && l.account === account && l.amount === amount;
  const count = (f: (l: BookLeg) => boolean): number => legs.filter(f).length;
  const sourceLeg = t.kind === 'capture' ? 'capture' : 'debit';
  // Credited in the destination's database while the source's row waits for the outcome.
  const awaiting = t.state === 'debited' && legs.some((l) => l.kind === 'credit' && l.region !== t.region);
  return {
    id: t.id, kind: t.kind, state: awaiting ? 'settled' : t.state, amount: t.amount, source_id: t.source_id, destination_id: t.destination_id,
    debits: count((l) => l.kind === 'debit' || l.kind === 'capture'),
    good_debits: count((l) => is(l, sourceLeg, t.source_id, `-${t.amount}`)),
    credits: count((l) => l.kind === 'credit'),
    good_credits: count((l) => is(l, 'credit', t.destination_id, t.amount)),
    returns: count((l) => l.kind === 'return'),
    good_returns: count((l) => is(l, 'return', t.source_id, t.amount)),
    others: count((l) => !MONEY_KINDS.has(l.kind)),
    legs: legs.map((l) => ({ account: l.account, seq: l.seq, kind: l.kind, amount: l.amount, db: l.region })),
    ...(awaiting ? { shownState: `debited in ${t.region}, credited in ${legs.find((l) => l.kind === 'credit')!.region}` } : {}),
  };
}

/** The rule checkTransferLegs states in SQL, for a transfer whose legs span databases. */
function legsHold(t: LegRow): boolean {
  if (!(t.debits === 1 && t.good_debits === 1 && t.others === 0)) return false;
  if (t.state === 'settled') return t.credits === 1 && t.good_credits === 1 && t.returns === 0;
  if (t.state === 'returned') return t.returns === 1 && t.good_returns === 1 && t.credits === 0;
  return t.credits === 0 && t.returns === 0;
}

/** Each transfer: one source leg over all journals; its credit or return at most once, exactly once when terminal. */
async function checkLegsAcross(book: TransferBook, runs: RegionRun[], failures: Failures, stats: Record<string, number>): Promise<void> {
  const dbOf = new Map(runs.map((r) => [r.region, r.db]));
  let described = 0;
  for (const [id, rows] of book.transfers) {
    const t = homeRow(id, rows);
    stats[`transfers_${t.state}`] = (stats[`transfers_${t.state}`] ?? 0) + 1;
    const row = legRowAcross(t, book.legs.get(id) ?? []);
    if (legsHold(row) || described++ >= 1000) continue;
    const last = new Map<string, string>();
    for (const account of [t.source_id, t.destination_id]) {
      const db = dbOf.get(accountRegion(account) ?? '');
      for (const [k, v] of db ? await lastSeqs(db, [account]) : []) last.set(k, v);
    }
    describeLegs(row, failures, last);
  }
}

/** Every acknowledged transfer is in the database of its id's region, as asked. */
async function checkAcknowledgedByRegion(runs: RegionRun[], acked: Map<string, Acknowledged>, failures: Failures): Promise<void> {
  const byRegion = new Map<string, Map<string, Acknowledged>>();
  for (const [id, a] of acked) {
    const region = transferRegion(id);
    if (region === undefined) failures.add('acknowledged', `acknowledged ${a.op} ${id} (key ${a.key}): its id names no region`);
    else if (!runs.some((r) => r.region === region)) failures.add('acknowledged', `acknowledged ${a.op} ${id} (key ${a.key}): region ${region} has no database to check`);
    else byRegion.set(region, (byRegion.get(region) ?? new Map()).set(id, a));
  }
  for (const run of runs) {
    const mine = byRegion.get(run.region);
    if (mine) await checkAcknowledged(run.db, mine, run.failures, 'transfers');
  }
}

// ---------------------------------------------------------------------------------------------
// baseline (src/baseline/engine.ts): baseline_accounts holds the balance and the count of
// postings (seq, 1 at open, which writes no posting), baseline_journal one row per leg,
// baseline_transfers one settled row per movement, baseline_idempotency the keys. Every
// movement commits whole in one transaction, so nothing is ever in flight.

async function columns(db: Queryable, table: string): Promise<Set<string>> {
  const { rows } = await db.query(
    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1", [table],
  );
  return new Set(rows.map((r) => r.column_name as string));
}

async function checkBaseline(run: CheckRun): Promise<void> {
  const { db, failures, stats } = run;
  for (const t of ['baseline_accounts', 'baseline_journal']) {
    if (!(await tableExists(db, t))) {
      failures.add('schema', `baseline: no ${t} table`);
      return;
    }
  }
  const { rows: [counts] } = await db.query(`SELECT
      (SELECT count(*) FROM baseline_accounts)::int AS accounts,
      (SELECT count(*) FROM baseline_journal)::int AS postings,
      (SELECT count(*) FROM baseline_transfers)::int AS transfers`);
  stats.baselineAccounts = counts.accounts;
  stats.baselinePostings = counts.postings;
  stats.baselineTransfers = counts.transfers;
  await checkBaselineLedger(run);
  await checkBaselineLegs(run);
  await checkBaselineReplay(run);
  await checkBaselineBalances(run);
  await checkBaselineKeys(run);
  if (run.acked) await checkAcknowledged(db, run.acked, failures, 'baseline_transfers');
}

/**
 * Ledger: every posting, external accounts included, sums to 0 per currency. A baseline
 * transfer in a state other than settled would be in flight, which this engine never is.
 */
async function checkBaselineLedger({ db, failures }: CheckRun): Promise<void> {
  const { rows: sums } = await db.query(`
    SELECT a.currency, sum(j.amount)::text AS s FROM baseline_journal j JOIN baseline_accounts a ON a.id = j.account_id GROUP BY a.currency`);
  for (const r of sums) {
    if (BigInt(r.s) !== 0n) failures.add('ledger', `baseline ${String(r.currency).trim()}: postings sum to ${r.s}, not 0`);
  }
  const { rows: unsettled } = await db.query("SELECT id, state FROM baseline_transfers WHERE state <> 'settled' ORDER BY id LIMIT 50");
  for (const r of unsettled) failures.add('transfer', `baseline transfer ${r.id} is ${r.state}: the baseline settles every transfer in its transaction`);
  const { rows: homeless } = await db.query(`
    SELECT j.account_id, j.seq::text AS seq FROM baseline_journal j
     WHERE NOT EXISTS (SELECT 1 FROM baseline_accounts a WHERE a.id = j.account_id) ORDER BY j.account_id, j.seq LIMIT 50`);
  for (const r of homeless) failures.add('accounts', `baseline account ${r.account_id} seq ${r.seq}: postings for an account that has no row`);
}

/** Each transfer: one debit of -amount on its source and one credit of +amount on its destination. */
async function checkBaselineLegs({ db, failures }: CheckRun): Promise<void> {
  const { rows: legs } = await db.query(`
    SELECT * FROM (
      SELECT t.id, t.amount::text AS amount, t.source_id, t.destination_id,
        count(j.seq) FILTER (WHERE j.amount < 0)::int AS debits,
        count(j.seq) FILTER (WHERE j.amount = -t.amount AND j.account_id = t.source_id)::int AS good_debits,
        count(j.seq) FILTER (WHERE j.amount > 0)::int AS credits,
        count(j.seq) FILTER (WHERE j.amount = t.amount AND j.account_id = t.destination_id)::int AS good_credits,
        string_agg(j.account_id || ' seq ' || j.seq::text || ' (' || j.amount::text || ')', ', ' ORDER BY j.account_id, j.seq) AS postings
      FROM baseline_transfers t LEFT JOIN baseline_journal j ON j.transfer_id = t.id
      GROUP BY t.id) x
    WHERE debits <> 1 OR good_debits <> 1 OR credits <> 1 OR good_credits <> 1
    LIMIT 1000`);
  for (const t of legs) {
    failures.add('transfer', `baseline transfer ${t.id} (${t.amount} from ${t.source_id} to ${t.destination_id}): ${t.debits} debit(s), ${t.credits} credit(s), expected one of each: ${t.postings ?? 'no postings'}`);
  }
  const { rows: orphans } = await db.query(`
    SELECT j.account_id, j.seq::text AS seq, j.transfer_id, j.amount::text AS amount FROM baseline_journal j
     WHERE NOT EXISTS (SELECT 1 FROM baseline_transfers t WHERE t.id = j.transfer_id) ORDER BY j.account_id, j.seq LIMIT 200`);
  for (const o of orphans) failures.add('transfer', `baseline account ${o.account_id} seq ${o.seq}: posting of ${o.amount} for ${o.transfer_id}, which is not in baseline_transfers`);
}

/**
 * Replay, in SQL (the journal has no epochs or holds to carry along): seq without gaps,
 * the running sum equal to balance_after, never below -overdraft_limit for a customer.
 */
async function checkBaselineReplay({ db, failures }: CheckRun): Promise<void> {
  const { rows: replay } = await db.query(`
    SELECT account_id, seq::text AS seq, prev::text AS prev, balance_after::text AS balance_after, running::text AS running,
           overdraft_limit::text AS lim, kind FROM (
      SELECT j.account_id, j.seq, j.balance_after, a.overdraft_limit, a.kind,
             lag(j.seq) OVER w AS prev, sum(j.amount) OVER w AS running,
             row_number() OVER w AS n
        FROM baseline_journal j JOIN baseline_accounts a ON a.id = j.account_id
      WINDOW w AS (PARTITION BY j.account_id ORDER BY j.seq)) x
    WHERE (prev IS NULL AND seq <> 2) OR (prev IS NOT NULL AND seq <> prev + 1) OR running <> balance_after
       OR (kind = 'customer' AND running < -overdraft_limit)
    ORDER BY account_id, seq LIMIT 1000`);
  const seen = new Set<string>();
  for (const r of replay) {
    const once = (what: string, check: string, msg: string): void => {
      if (seen.has(`${r.account_id}/${what}`)) return;
      seen.add(`${r.account_id}/${what}`);
      failures.add(check, msg);
    };
    // Seq 1 is the opening, which writes no posting: the journal starts at seq 2.
    if (r.prev === null && r.seq !== '2') once('seq', 'seq', `baseline account ${r.account_id}: journal starts at seq ${r.seq}, not 2 (missing seq 2${BigInt(r.seq) > 3n ? `..${BigInt(r.seq) - 1n}` : ''})`);
    if (r.prev !== null && BigInt(r.seq) !== BigInt(r.prev) + 1n) {
      once('seq', 'seq', `baseline account ${r.account_id}: seq ${r.seq} follows seq ${r.prev} (missing seq ${BigInt(r.prev) + 1n}${BigInt(r.seq) - BigInt(r.prev) > 2n ? `..${BigInt(r.seq) - 1n}` : ''})`);
    }
    if (r.running !== r.balance_after) once('replay', 'replay', `baseline account ${r.account_id} seq ${r.seq}: balance_after is ${r.balance_after}, replaying the journal gives ${r.running}`);
    if (r.kind === 'customer' && BigInt(r.running) < -BigInt(r.lim)) {
      once('overdraft', 'overdraft', `baseline account ${r.account_id} seq ${r.seq}: balance ${r.running} is below -overdraft_limit (-${r.lim})`);
    }
  }
}

/** Balances equal the sums of their postings, and seq counts them (1 at open, +1 per posting). */
async function checkBaselineBalances({ db, failures }: CheckRun): Promise<void> {
  const { rows: balances } = await db.query(`
    SELECT a.id, a.balance::text AS balance, a.seq::text AS seq, coalesce(s.total, 0)::text AS total, coalesce(s.last, 1)::text AS last
      FROM baseline_accounts a
      LEFT JOIN (SELECT account_id, sum(amount) AS total, max(seq) AS last FROM baseline_journal GROUP BY account_id) s ON s.account_id = a.id
     WHERE a.balance <> coalesce(s.total, 0) OR a.seq <> coalesce(s.last, 1)
     ORDER BY a.id LIMIT 200`);
  for (const r of balances) {
    if (r.balance !== r.total) failures.add('balance', `baseline account ${r.id}: balance ${r.balance}, its postings sum to ${r.total}`);
    if (r.seq !== r.last) failures.add('seq', `baseline account ${r.id}: account row at seq ${r.seq}, its journal ends at seq ${r.last}`);
  }
}

/**
 * Idempotency: every transfer was made under a key that names it (one key, one transfer).
 * A set difference, for the reason given in checkKeys.
 */
async function checkBaselineKeys({ db, failures, notes }: CheckRun): Promise<void> {
  if (await tableExists(db, 'baseline_idempotency')) {
    const { rows: keyless } = await db.query(`
      SELECT id, tenant_id FROM (
        SELECT tenant_id, id FROM baseline_transfers
        EXCEPT SELECT tenant_id, resource_id FROM baseline_idempotency WHERE resource_id IS NOT NULL) m
      ORDER BY id LIMIT 200`);
    for (const r of keyless) failures.add('idempotency', `baseline transfer ${r.id} (tenant ${r.tenant_id}) has no idempotency key naming it: it was applied without claiming one`);
  } else {
    notes.push('baseline: no baseline_idempotency table: keys not checked');
  }
}

// ---------------------------------------------------------------------------------------------
// CLI

export function formatResult(r: CheckResult): string {
  const lines: string[] = [];
  const s = r.stats;
  const facts = Object.entries(s).map(([k, v]) => `${k} ${v}`).join(', ');
  lines.push(`checker (${r.engines.join(' + ') || 'no engine'}): ${r.ok ? 'PASS' : `FAIL (${r.failures.length} messages)`}${facts ? ` — ${facts}` : ''}`);
  for (const n of r.notes) lines.push(`  note: ${n}`);
  for (const f of r.failures) lines.push(`  ${f}`);
  return lines.join('\n');
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        'database-url': { type: 'string' },
        'region-database-urls': { type: 'string' },
        requests: { type: 'string' },
        'settle-ms': { type: 'string', default: '30000' },
        engine: { type: 'string', default: 'auto' },
        'max-per-check': { type: 'string', default: '20' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  const regionUrls = args['region-database-urls'];
  if (args.help || !args['database-url'] === !regionUrls) {
    process.stderr.write(
      'usage: node --import tsx bench/checker.ts (--database-url URL | --region-database-urls eu=URL,us=URL) [--requests FILE.ndjson] [--settle-ms 30000] [--engine auto|geopay|baseline] [--max-per-check 20]\n',
    );
    return args.help ? 0 : 2;
  }
  const engine = args.engine as CheckOptions['engine'];
  if (!['auto', 'geopay', 'baseline'].includes(engine!)) {
    process.stderr.write(`--engine is auto, geopay or baseline, got ${args.engine}\n`);
    return 2;
  }
  const opts: CheckOptions = {
    ...(args.requests ? { requests: args.requests } : {}),
    settleTimeoutMs: Number(args['settle-ms']),
    engine,
    maxPerCheck: Number(args['max-per-check']),
  };
  const result = regionUrls ? await checkRegionUrls(regionUrls, opts) : await checkUrl(args['database-url']!, opts);
  if (typeof result === 'string') {
    process.stderr.write(`${result}\n`);
    return 2;
  }
  process.stdout.write(`${formatResult(result)}\n`);
  return result.ok ? 0 : 1;
}

const openPool = (url: string): pg.Pool => new pg.Pool({ connectionString: url, max: 1, statement_timeout: 300_000 });

async function checkUrl(url: string, opts: CheckOptions): Promise<CheckResult> {
  const pool = openPool(url);
  try {
    return await check(pool, opts);
  } finally {
    await pool.end();
  }
}

/**
 * `eu=postgres://...,us=postgres://...`, the format of the REGION_DATABASE_URLS setting: a
 * region's name, `=`, its database's URL (split at the first `=`: a URL's query may hold more).
 */
export function parseRegionUrls(raw: string): Record<string, string> | string {
  const out: Record<string, string> = {};
  for (const part of raw.split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf('=');
    const region = part.slice(0, Math.max(at, 0)).trim();
    const url = part.slice(at + 1).trim();
    if (at <= 0 || !url) return `--region-database-urls: "${part}" is not region=URL`;
    if (parseRegion(region) === undefined) return `--region-database-urls: "${region}" is not a region name`;
    if (Object.hasOwn(out, region)) return `--region-database-urls: region ${region} named twice`;
    out[region] = url;
  }
  return Object.keys(out).length > 0 ? out : '--region-database-urls: no region=URL given';
}

async function checkRegionUrls(raw: string, opts: CheckOptions): Promise<CheckResult | string> {
  const urls = parseRegionUrls(raw);
  if (typeof urls === 'string') return urls;
  if (opts.engine === 'baseline') return '--region-database-urls checks geopay databases; --engine baseline does not apply';
  const pools = Object.fromEntries(Object.entries(urls).map(([region, url]) => [region, openPool(url)]));
  try {
    return await checkRegions(pools, opts);
  } finally {
    await Promise.all(Object.values(pools).map((p) => p.end()));
  }
}

if (isMain(import.meta.url)) runMain(main);
