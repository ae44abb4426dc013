// One actor per account: the single writer of its balance. It validates its queued commands
// in order against memory, commits them in one transaction (per-actor group commit), and
// replies only after COMMIT. The results of async work come back to it as messages.
import type { Logger } from 'pino';
import type { AccountState } from '../domain/account.ts';
import { decide, evolve, heldDelta, journalKind, signedAmount } from '../domain/account.ts';
import type { AccountId, TransferId } from '../domain/ids.ts';
import { ERRORS, GeopayError } from '../domain/errors.ts';
import { accountView, problem } from '../domain/views.ts';
import type { AccountReply } from '../domain/account.ts';
import type { Pool } from '../persistence/db.ts';
import type { HoldUpdate, Loaded, Prefetched, StoredKey, WriteSet } from '../persistence/journal.ts';
import { WriteConflict, emptyWriteSet, keyOf, loadAccount, prefetch } from '../persistence/journal.ts';
import type { Ownership } from '../cluster/ownership.ts';
import type { AccountRequest, CommandResult, OkAnswer } from './protocol.ts';
import type { ActorRef } from './nact.ts';
import { tell } from './nact.ts';

export interface Pending extends AccountRequest { reply: (r: CommandResult) => void; at: string }

export interface Inspection {
  resident: true;
  phase: Phase;
  state: AccountState | undefined;
  pending: number;
  inFlight: number;
  lastSnapshotSeq: number;
  lastActivityAt: string;
}

export type AccountMsg =
  | { type: 'Command'; req: Pending }
  | { type: 'Loaded'; result: Loaded | undefined; error?: unknown }
  | { type: 'Flushed'; batch: Pending[]; outcome: FlushOutcome | undefined; error?: unknown }
  | { type: 'Inspect'; reply: (i: Inspection) => void }
  /** The committed state, once loaded. */
  | { type: 'Read'; reply: (r: { state: AccountState | undefined } | { error: GeopayError }) => void }
  /** Snapshot and stop once idle; `wait` holds the request until the mailbox drains. */
  | { type: 'Passivate'; wait: boolean; done: (passivated: boolean) => void }
  | { type: 'Snapshotted'; seq: number; error?: unknown }
  /** The shard was lost: answer everything held with the error and stop taking commands. */
  | { type: 'Retire'; error: GeopayError };

type Phase = 'loading' | 'ready' | 'snapshotting' | 'retired';

export interface ActorState {
  phase: Phase;
  account: AccountState | undefined;
  lastSnapshotSeq: number;
  pending: Pending[];
  inFlight: Pending[] | null;
  lastActivity: number;
  passivation: { wait: boolean; done: (passivated: boolean) => void } | null;
  readers: ((r: { state: AccountState | undefined } | { error: GeopayError }) => void)[];
}

/** What the actor shares with its registry: counters the registry reads synchronously. */
export interface ActorHandle {
  readonly id: AccountId;
  readonly shard: string;
  ref: ActorRef<AccountMsg>;
  /** Messages dispatched to nact and not yet handled: nothing may be dropped by a stop. */
  queued: number;
  depth: number;
  lastActivity: number;
  retired: boolean;
  /** A batch is being committed: its result is still to come back as a message. */
  flushing: boolean;
}

export interface Committed {
  ws: WriteSet;
  debits: { transferId: TransferId; destinationId: AccountId; amount: bigint; currency: string }[];
}

export interface ActorDeps {
  pool: Pool;
  ownership: Ownership;
  nodeId: string;
  snapshotEvery: number;
  maxBatch: number;
  mailboxLimit: number;
  logger: Logger;
  now: () => number;
  /** Tests only: a pause between deciding and committing (see FAULT_COMMIT_DELAY_MS). */
  faultCommitDelayMs: number;
  /** The node's group-commit writer: resolves after COMMIT, or rejects (nothing written). */
  commit: (ws: WriteSet) => Promise<void>;
  /** After a commit: the saga's next steps and the waiters of transfers. */
  afterCommit: (ws: WriteSet) => void;
  /** Take this actor out of routing: it answers what it still holds, then stops. */
  retire: (h: ActorHandle) => void;
  /** It is idle and snapshotted: remove and stop it, synchronously. */
  passivated: (h: ActorHandle) => void;
}

export function initialActorState(now: number): ActorState {
  return { phase: 'loading', account: undefined, lastSnapshotSeq: 0, pending: [], inFlight: null, lastActivity: now, passivation: null, readers: [] };
}

interface FlushOutcome { state: AccountState | undefined; results: CommandResult[]; wss: WriteSet[]; snapshotSeq: number | undefined }

/** The server reported the error, so the statement rolled back for certain. */
const rolledBack = (err: unknown): boolean => {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
};

/** What a client hears when its command's write failed. */
function failureFor(err: unknown): GeopayError {
  const code = (err as { code?: string }).code ?? '';
  // Connection, transaction-rollback, resource and operator classes pass; the rest is a
  // statement PostgreSQL will refuse again, which is our bug or data the edge let through.
  if (rolledBack(err) && !/^(08|40|53|57|58)/.test(code)) return new GeopayError('internal_error', 'the write was refused', { cause: err });
  return new GeopayError('database_unavailable', 'the write did not complete', { cause: err });
}

const MAX_CONFLICT_RETRIES = 3;

/** The answer an idempotency key keeps for this reply. */
function storedAnswer(onOk: OkAnswer, reply: AccountReply): { status: number; body: unknown } | null {
  if (!reply.ok) return { status: ERRORS[reply.code].status, body: problem(reply.code) };
  if (onOk === null) return null;
  if ('accountView' in onOk) return { status: onOk.status, body: accountView(reply.state) };
  return onOk;
}
const NOTHING_KNOWN: Prefetched = { transfers: new Map(), keys: new Map() };

export function makeAccountHandler(h: ActorHandle, deps: ActorDeps) {
  const log = deps.logger.child({ account: h.id, shard: h.shard });

  function startLoad(self: ActorRef<AccountMsg>): void {
    loadAccount(deps.pool, h.id).then(
      (result) => tell(self, { type: 'Loaded', result }),
      (error) => tell(self, { type: 'Loaded', result: undefined, error }),
    );
  }

  function failAll(reqs: Pending[], error: GeopayError): void {
    for (const r of reqs) r.reply({ type: 'error', error });
  }

  function retire(s: ActorState, error: GeopayError): ActorState {
    failAll(s.pending, error);
    for (const r of s.readers) r({ error });
    if (s.passivation) s.passivation.done(false);
    h.retired = true;
    deps.retire(h);
    return { ...s, phase: 'retired', pending: [], passivation: null, readers: [] };
  }

  function maybeFlush(s: ActorState, self: ActorRef<AccountMsg>): ActorState {
    if (s.phase !== 'ready' || s.inFlight !== null) return s;
    if (s.pending.length === 0) return maybePassivate(s, self);
    const batch = s.pending.slice(0, deps.maxBatch);
    const rest = s.pending.slice(batch.length);
    flush(s.account, s.lastSnapshotSeq, batch).then(
      (outcome) => tell(self, { type: 'Flushed', batch, outcome }),
      (error) => tell(self, { type: 'Flushed', batch, outcome: undefined, error }),
    );
    h.flushing = true;
    return { ...s, pending: rest, inFlight: batch };
  }

  function maybePassivate(s: ActorState, self: ActorRef<AccountMsg>): ActorState {
    if (!s.passivation || s.phase !== 'ready' || s.inFlight || s.pending.length > 0) return s;
    const seq = s.account?.seq ?? 0;
    if (s.account && seq > s.lastSnapshotSeq) {
      const account = s.account;
      deps.ownership.epochFor(h.shard)
        .then((epoch) => deps.commit({ ...emptyWriteSet(h.shard, epoch, deps.nodeId), snapshot: { accountId: h.id, seq, state: account } }))
        .then(() => tell(self, { type: 'Snapshotted', seq }), (error) => tell(self, { type: 'Snapshotted', seq, error }));
      return { ...s, phase: 'snapshotting' };
    }
    return finishPassivation(s);
  }

  function finishPassivation(s: ActorState): ActorState {
    const p = s.passivation!;
    if (h.queued > 0 || s.pending.length > 0) {
      // Commands arrived meanwhile: stay, unless the caller waits for a full drain.
      if (!p.wait) {
        p.done(false);
        return { ...s, passivation: null };
      }
      return s;
    }
    p.done(true);
    deps.passivated(h);
    return { ...s, passivation: null, phase: 'retired' };
  }

  /** Validates a batch in order against the state and commits it in one transaction. */
  async function flush(start: AccountState | undefined, lastSnapshotSeq: number, batch: Pending[]): Promise<FlushOutcome> {
    try {
      return await flushRetrying(start, lastSnapshotSeq, batch);
    } catch (err) {
      if (batch.length === 1 || !rolledBack(err)) throw err;
      // One command spoiled the batch: commit them one by one so only that one fails.
      log.warn({ err, size: batch.length }, 'batch refused by the database; committing its commands one at a time');
      let state = start;
      let snap = lastSnapshotSeq;
      const results: CommandResult[] = [];
      const wss: WriteSet[] = [];
      for (const r of batch) {
        try {
          const o = await flushRetrying(state, snap, [r]);
          state = o.state;
          snap = o.snapshotSeq ?? snap;
          results.push(o.results[0]!);
          wss.push(...o.wss);
        } catch (e) {
          if (!rolledBack(e)) throw e;
          results.push({ type: 'error', error: failureFor(e) });
        }
      }
      return { state, results, wss, snapshotSeq: snap === lastSnapshotSeq ? undefined : snap };
    }
  }

  async function flushRetrying(start: AccountState | undefined, lastSnapshotSeq: number, batch: Pending[]): Promise<FlushOutcome> {
    // Optimistic first: a fresh key and a first delivery of a credit are the common case, and
    // the commit's conditional writes catch the rest (GP002). A conflict, or a batch holding
    // a redelivery, reads what it needs before deciding.
    let careful = batch.some((r) => r.careful === true);
    for (let attempt = 1; ; attempt++) {
      try {
        return await flushOnce(start, lastSnapshotSeq, batch, careful);
      } catch (err) {
        if (!(err instanceof WriteConflict) || attempt >= MAX_CONFLICT_RETRIES) throw err;
        if (careful) log.info({ attempt, err }, 'batch conflicted; redoing it');
        careful = true;
      }
    }
  }

  async function flushOnce(start: AccountState | undefined, lastSnapshotSeq: number, batch: Pending[], careful: boolean): Promise<FlushOutcome> {
    const transferIds: string[] = [];
    const keys: { tenantId: string; key: string }[] = [];
    if (careful) {
      for (const r of batch) {
        if (r.cmd.type === 'Credit' || r.cmd.type === 'Return') transferIds.push(r.cmd.transferId);
        if (r.cmd.type === 'Refund') transferIds.push(r.cmd.originalId);
        if (r.idem) keys.push({ tenantId: r.idem.tenantId, key: r.idem.key });
      }
    }
    const [pre, epoch] = await Promise.all([
      careful ? prefetch(deps.pool, transferIds, keys) : NOTHING_KNOWN,
      deps.ownership.epochFor(h.shard),
    ]);
    const ws = emptyWriteSet(h.shard, epoch, deps.nodeId);
    const holdUpdates = new Map<string, HoldUpdate>();
    const refundsTaken = new Map<string, bigint>();
    const results: CommandResult[] = [];
    const seenKeys = new Map<string, StoredKey>();
    const handled = new Set<string>();
    let s = start;
    for (const r of batch) {
      const k = r.idem ? keyOf(r.idem.tenantId, r.idem.key) : undefined;
      const stored = k === undefined ? undefined : (pre.keys.get(k) ?? seenKeys.get(k));
      if (stored) {
        results.push({ type: 'duplicate', stored });
        continue;
      }
      let cmd = r.cmd;
      if (cmd.type === 'Credit' || cmd.type === 'Return') {
        const expect = cmd.type === 'Credit' ? 'debited' : 'refused';
        const mark = `${cmd.type}:${cmd.transferId}`;
        // Not read (optimistic): assume the expected state; the commit checks it.
        const known = careful ? pre.transfers.get(cmd.transferId)?.state : expect;
        cmd = { ...cmd, alreadyApplied: known !== expect || handled.has(mark) };
        handled.add(mark);
      }
      if (cmd.type === 'Refund') {
        // What is left to refund: read when careful, else as the edge read it; the commit
        // takes it only if it is still there (refunded + amount <= amount).
        const orig = careful ? pre.transfers.get(cmd.originalId) : undefined;
        const left = orig ? (orig.state === 'settled' ? orig.amount - orig.refunded : 0n) : cmd.refundable;
        cmd = { ...cmd, refundable: left - (refundsTaken.get(cmd.originalId) ?? 0n) };
      }
      const d = decide(s, cmd);
      for (const e of d.events) {
        const before = s;
        s = evolve(s, e);
        const kind = journalKind(e);
        if (kind !== undefined) {
          ws.journal.push({
            accountId: h.id, seq: s.seq, kind, transferId: 'transferId' in e ? e.transferId : null,
            amount: signedAmount(e), balanceAfter: s.balance, holdId: 'holdId' in e ? e.holdId : null,
            heldDelta: heldDelta(e), heldAfter: s.held, at: r.at,
          });
        }
        switch (e.type) {
          case 'Opened':
            ws.accounts.push({ id: e.id, tenantId: e.tenantId, kind: e.kind, currency: e.currency, region: e.region, shard: h.shard, overdraftLimit: e.overdraftLimit, metadata: e.metadata, at: e.at });
            break;
          case 'Debited': {
            const t = r.transfer;
            if (!t) throw new Error('a Debit without its transfer record');
            ws.newTransfers.push({ id: e.transferId, tenantId: t.tenantId, kind: t.kind, sourceId: h.id, destinationId: t.destinationId, amount: e.amount, currency: s.currency, metadata: t.metadata, at: r.at, holdId: null, refundOf: null });
            break;
          }
          case 'RefundDebited': {
            const t = r.transfer;
            if (!t) throw new Error('a Refund without its transfer record');
            ws.newTransfers.push({ id: e.transferId, tenantId: t.tenantId, kind: 'refund', sourceId: h.id, destinationId: t.destinationId, amount: e.amount, currency: s.currency, metadata: t.metadata, at: r.at, holdId: null, refundOf: e.originalId });
            ws.refundClaims.push({ originalId: e.originalId, amount: e.amount });
            refundsTaken.set(e.originalId, (refundsTaken.get(e.originalId) ?? 0n) + e.amount);
            break;
          }
          case 'HoldPlaced':
            ws.newHolds.push({
              id: e.holdId, tenantId: r.hold?.tenantId ?? null, sourceId: h.id, destinationId: e.destinationId, amount: e.amount, currency: s.currency,
              multiCapture: e.multiCapture, expiresAt: e.expiresAt, metadata: r.hold?.metadata ?? null, at: r.at, groupId: r.hold?.groupId ?? null,
            });
            break;
          case 'HoldCaptured': {
            const t = r.transfer;
            const hold = before!.holds[e.holdId]!;
            ws.newTransfers.push({ id: e.transferId, tenantId: t?.tenantId ?? null, kind: 'capture', sourceId: h.id, destinationId: e.destinationId, amount: e.amount, currency: s.currency, metadata: t?.metadata ?? null, at: r.at, holdId: e.holdId, refundOf: null });
            const after = s.holds[e.holdId];
            holdUpdates.set(e.holdId, { id: e.holdId, captured: hold.amount - hold.remaining + e.amount, state: after ? 'held' : 'captured', at: r.at });
            break;
          }
          case 'HoldReleased': {
            const hold = before!.holds[e.holdId]!;
            holdUpdates.set(e.holdId, { id: e.holdId, captured: hold.amount - hold.remaining, state: e.reason, at: r.at });
            break;
          }
          case 'Credited':
            ws.transferUpdates.push({ id: e.transferId, from: 'debited', to: 'settled', refusalCode: null, at: r.at });
            break;
          case 'CreditRefused':
            ws.transferUpdates.push({ id: e.transferId, from: 'debited', to: 'refused', refusalCode: e.reason, at: r.at });
            break;
          case 'Returned':
            ws.transferUpdates.push({ id: e.transferId, from: 'refused', to: 'returned', refusalCode: null, at: r.at });
            break;
          default:
            break;
        }
      }
      if (r.idem && k !== undefined) {
        const resp = storedAnswer(r.idem.onOk, d.reply);
        const row = { tenantId: r.idem.tenantId, key: r.idem.key, requestHash: r.idem.requestHash, resourceId: r.idem.resourceId, statusCode: resp?.status ?? null, response: resp?.body ?? null };
        ws.idempotency.push(row);
        seenKeys.set(k, { requestHash: row.requestHash, resourceId: row.resourceId, statusCode: row.statusCode, response: row.response });
      }
      results.push({ type: 'done', reply: d.reply });
    }
    ws.holdUpdates.push(...holdUpdates.values());
    let snapshotSeq: number | undefined;
    if (s && s.seq - lastSnapshotSeq >= deps.snapshotEvery) {
      ws.snapshot = { accountId: h.id, seq: s.seq, state: s };
      snapshotSeq = s.seq;
    }
    const writes = ws.accounts.length + ws.journal.length + ws.newTransfers.length + ws.transferUpdates.length + ws.idempotency.length
      + ws.newHolds.length + ws.holdUpdates.length + ws.refundClaims.length;
    if (writes === 0) return { state: s, results, wss: [], snapshotSeq: undefined };
    if (deps.faultCommitDelayMs > 0) await new Promise((r) => setTimeout(r, deps.faultCommitDelayMs));
    await deps.commit(ws);
    return { state: s, results, wss: [ws], snapshotSeq };
  }

  return function handle(s: ActorState, msg: AccountMsg, self: ActorRef<AccountMsg>): ActorState {
    switch (msg.type) {
      case 'Command': {
        h.queued--;
        h.lastActivity = deps.now();
        if (s.phase === 'retired') {
          msg.req.reply({ type: 'error', error: new GeopayError('shard_unavailable', 'account actor retired') });
          return s;
        }
        if (s.pending.length >= deps.mailboxLimit) {
          msg.req.reply({ type: 'error', error: new GeopayError('mailbox_full') });
          return s;
        }
        const next = { ...s, pending: [...s.pending, msg.req], lastActivity: h.lastActivity };
        h.depth = next.pending.length + (next.inFlight?.length ?? 0);
        return maybeFlush(next, self);
      }
      case 'Loaded': {
        if (msg.error !== undefined || !msg.result) {
          log.error({ err: msg.error }, 'account load failed');
          return retire(s, new GeopayError('database_unavailable', 'account could not be loaded', { cause: msg.error }));
        }
        for (const r of s.readers) r({ state: msg.result.state });
        return maybeFlush({ ...s, phase: 'ready', account: msg.result.state, lastSnapshotSeq: msg.result.lastSnapshotSeq, readers: [] }, self);
      }
      case 'Flushed': {
        h.flushing = false;
        let next: ActorState = { ...s, inFlight: null };
        if (msg.error !== undefined || !msg.outcome) {
          const err = msg.error;
          if (err instanceof GeopayError && err.code === 'shard_unavailable') {
            // Fenced: another owner took the shard. Stop at once; the caller retries there.
            log.warn({ err }, 'write fenced; retiring actor');
            failAll(msg.batch, err);
            void deps.ownership.epochFor(h.shard).then((epoch) => deps.ownership.fenced(h.shard, epoch), () => undefined);
            return retire(next, err);
          }
          // The commit may or may not have happened: answer retryable and reload from the journal.
          log.error({ err }, 'batch failed; reloading from the journal');
          failAll(msg.batch, failureFor(err));
          startLoad(self);
          return { ...next, phase: 'loading' };
        }
        const o = msg.outcome;
        next = { ...next, account: o.state, lastSnapshotSeq: o.snapshotSeq ?? s.lastSnapshotSeq };
        msg.batch.forEach((r, i) => r.reply(o.results[i]!));
        for (const ws of o.wss) deps.afterCommit(ws);
        h.depth = next.pending.length;
        return maybeFlush(next, self);
      }
      case 'Read':
        h.queued--;
        if (s.phase === 'retired') msg.reply({ error: new GeopayError('shard_unavailable', 'account actor retired') });
        else if (s.phase === 'loading') return { ...s, readers: [...s.readers, msg.reply] };
        else msg.reply({ state: s.account });
        return s;
      case 'Inspect':
        msg.reply({
          resident: true, phase: s.phase, state: s.account, pending: s.pending.length, inFlight: s.inFlight?.length ?? 0,
          lastSnapshotSeq: s.lastSnapshotSeq, lastActivityAt: new Date(s.lastActivity).toISOString(),
        });
        return s;
      case 'Retire':
        if (s.phase === 'retired') return s;
        log.warn({ code: msg.error.code }, 'actor retired: shard lost');
        return retire(s, msg.error);
      case 'Passivate': {
        if (s.phase === 'retired') {
          msg.done(false);
          return s;
        }
        if (!msg.wait && (s.phase !== 'ready' || s.inFlight || s.pending.length > 0 || h.queued > 0)) {
          msg.done(false);
          return s;
        }
        return maybePassivate({ ...s, passivation: { wait: msg.wait, done: msg.done } }, self);
      }
      case 'Snapshotted': {
        if (msg.error !== undefined) {
          log.warn({ err: msg.error }, 'snapshot failed');
          if (s.passivation) s.passivation.done(false);
          return maybeFlush({ ...s, phase: 'ready', passivation: null }, self);
        }
        const next: ActorState = { ...s, phase: 'ready', lastSnapshotSeq: Math.max(s.lastSnapshotSeq, msg.seq) };
        if (next.pending.length > 0 && !(s.passivation?.wait)) {
          s.passivation?.done(false);
          return maybeFlush({ ...next, passivation: null }, self);
        }
        if (next.pending.length > 0) return maybeFlush(next, self);
        return finishPassivation(next);
      }
      default: {
        const never: never = msg;
        throw new Error(`unknown message ${JSON.stringify(never)}`);
      }
    }
  };
}

export { startLoadFor };
function startLoadFor(pool: Pool, id: AccountId, self: ActorRef<AccountMsg>): void {
  loadAccount(pool, id).then(
    (result) => tell(self, { type: 'Loaded', result }),
    (error) => tell(self, { type: 'Loaded', result: undefined, error }),
  );
}
