// The row-locking baseline: the design most teams would build instead of actors, kept as the
// benchmarks' comparison point (ENGINE=baseline). Each request is one PostgreSQL transaction on
// pooled connections: claim the idempotency key, lock the account rows in id order, decide by
// geopay's own rules (decide), move the balances, journal both legs and store the answer.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Pool, Client } from '../persistence/db.ts';
import type { BaselineMoveKind, BaselineStoredKey, Leg, SettledTransfer } from '../persistence/baseline-store.ts';
import {
  applyMove, claimKey, createExternalAccount, deleteExpiredBaselineKeys, inTransaction, insertAccountWithKey, isLockConflict,
  lockAccounts, readAccount, readKey, readTransfer, setupBaselineSchema, storeAnswer,
} from '../persistence/baseline-store.ts';
import type { AccountState, Decision } from '../domain/account.ts';
import { decide, signedAmount } from '../domain/account.ts';
import { invariant } from '../domain/assert.ts';
import type { AccountId, Region, TransferId } from '../domain/ids.ts';
import { externalAccountId, isExternal, makeAccountId, makeTransferId, parseTenantId, regionOf, uuidv7Hex } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import type { ErrorCode } from '../domain/errors.ts';
import { GeopayError } from '../domain/errors.ts';
import type { AccountView, TransferView } from '../domain/views.ts';
import { accountView } from '../domain/views.ts';
import type { Outcome } from '../payments/outcome.ts';
import { STORED_CREATED, failed, ok } from '../payments/outcome.ts';

/** Creates the baseline's tables if missing (before the node serves). */
export async function setupBaseline(pool: Pool, logger: Logger): Promise<void> {
  await setupBaselineSchema(pool);
  logger.info('baseline tables ready');
}

/** What an idempotency key stores for a refusal: the HTTP layer's error map, injected. */
export type RejectionAnswer = (code: ErrorCode) => { status: number; body: unknown };

export interface OpenRequest {
  tenantId: string; key: string; hash: string; currency: Currency; region: Region;
  overdraftLimit: bigint; metadata: Record<string, unknown>;
}

export interface MoveRequest {
  kind: BaselineMoveKind;
  tenantId: string; key: string; hash: string;
  /** For a transfer, the tenant's two accounts; for a deposit or withdrawal, its one account. */
  accounts: readonly [AccountId] | readonly [AccountId, AccountId];
  amount: bigint; currency: Currency; metadata: Record<string, unknown> | null;
}

/**
 * Both legs of a movement by geopay's rules: the domain's decide() on the locked rows' state,
 * the source's Debit, then the destination's Credit. geopay's saga returns a credit the
 * destination refuses (201, state returned); here both legs are one transaction, so the
 * credit's refusal rejects the request like the debit's (422).
 */
export function decideMove(from: AccountState, to: AccountState, t: { transferId: TransferId; amount: bigint; currency: Currency }): { ok: true; legs: [Leg, Leg] } | { ok: false; code: ErrorCode } {
  const debit = decide(from, { type: 'Debit', transferId: t.transferId, amount: t.amount, currency: t.currency });
  if (!debit.reply.ok) return { ok: false, code: debit.reply.code };
  const credit = decide(to, { type: 'Credit', transferId: t.transferId, amount: t.amount, currency: t.currency, alreadyApplied: false });
  if (!credit.reply.ok) return { ok: false, code: credit.reply.code };
  const refused = credit.events.find((e) => e.type === 'CreditRefused');
  if (refused) return { ok: false, code: refused.reason };
  return { ok: true, legs: [legOf(debit), legOf(credit)] };
}

/** An accepted leg: one posting, and the state it leaves the account in. */
function legOf(d: Decision): Leg {
  invariant(d.reply.ok, 'a leg is built from an accepted decision');
  invariant(d.events.length === 1, 'an accepted leg posts exactly one event');
  const after = d.reply.state;
  return { accountId: after.id, delta: signedAmount(d.events[0]!), balanceAfter: after.balance, seq: after.seq };
}

/** Every baseline transfer settles in its own transaction, so its view is fixed at commit. */
function transferView(t: SettledTransfer): TransferView {
  return {
    id: t.id, kind: t.kind, sourceAccountId: t.sourceId, destinationAccountId: t.destinationId, amount: t.amount.toString(), currency: t.currency,
    state: 'settled', refusalCode: null, metadata: t.metadata, holdId: null, refundOf: null, refunded: '0', createdAt: t.createdAt, updatedAt: t.createdAt,
  };
}

/** The answer stored under a key that is already taken. */
function replay(k: BaselineStoredKey | undefined, hash: string): Outcome<never> {
  // Gone between the conflict and this read: expired this very moment. The client retries.
  if (!k) throw new GeopayError('idempotency_key_in_progress');
  if (k.requestHash !== hash) throw new GeopayError('idempotency_key_reused');
  // The key and its answer commit together; a key without one is a bug, not a race.
  invariant(k.statusCode !== null, 'a baseline key is committed with its answer');
  return { type: 'stored', status: k.statusCode, body: k.response };
}

export class BaselineEngine {
  /** Transactions run again after a deadlock or serialization failure (0 expected: locks are ordered). */
  conflictRetries = 0;

  constructor(
    private readonly pool: Pool,
    private readonly opts: { maxAttempts: number; clock: () => number; rejectionAnswer: RejectionAnswer },
  ) {}

  /** The account is opened by decide's Open, and inserted with its key in one statement. */
  async openAccount(o: OpenRequest): Promise<Outcome<AccountView>> {
    const now = this.opts.clock();
    const tenantId = parseTenantId(o.tenantId);
    invariant(tenantId !== undefined, 'a principal carries a valid tenant id');
    const opened = decide(undefined, {
      type: 'Open', id: makeAccountId(o.region, uuidv7Hex(now, randomBytes(10))), kind: 'customer', tenantId,
      currency: o.currency, region: o.region, overdraftLimit: o.overdraftLimit, metadata: o.metadata, at: new Date(now).toISOString(),
    });
    invariant(opened.reply.ok, 'opening a fresh account id is never refused');
    const view = accountView(opened.reply.state);
    const claim = { tenantId: o.tenantId, key: o.key, requestHash: o.hash, statusCode: STORED_CREATED, response: view };
    if (await insertAccountWithKey(this.pool, claim, opened.reply.state)) return ok(view);
    return replay(await readKey(this.pool, o.tenantId, o.key), o.hash);
  }

  async getAccount(tenantId: string, id: AccountId): Promise<AccountView> {
    const state = await readAccount(this.pool, tenantId, id);
    if (!state) throw new GeopayError('account_not_found');
    return accountView(state);
  }

  async getTransfer(tenantId: string, id: TransferId): Promise<TransferView> {
    const t = await readTransfer(this.pool, tenantId, id);
    if (!t) throw new GeopayError('transfer_not_found');
    return transferView(t);
  }

  /** A transfer, deposit or withdrawal: one transaction, run again (bounded) on a lock conflict. */
  async move(m: MoveRequest): Promise<Outcome<TransferView>> {
    // Money enters and leaves through the external account of the customer account's region.
    const [src, dst] = m.kind === 'transfer'
      ? [m.accounts[0], m.accounts[1]!]
      : m.kind === 'deposit'
        ? [externalAccountId(regionOf(m.accounts[0]), m.currency), m.accounts[0]]
        : [m.accounts[0], externalAccountId(regionOf(m.accounts[0]), m.currency)];
    for (let attempt = 1; ; attempt++) {
      try {
        return await inTransaction(this.pool, (c) => this.moveOnce(c, m, src, dst));
      } catch (err) {
        if (!isLockConflict(err)) throw err;
        if (attempt >= this.opts.maxAttempts) throw new GeopayError('database_unavailable', undefined, { cause: err });
        this.conflictRetries++;
        // Jittered backoff so the transactions that collided do not collide again.
        await sleep(Math.random() * 2 ** attempt);
      }
    }
  }

  private async moveOnce(c: Client, m: MoveRequest, src: AccountId, dst: AccountId): Promise<Outcome<TransferView>> {
    // 1. The key, first, before any account lock.
    const claim = { tenantId: m.tenantId, key: m.key, requestHash: m.hash };
    if (!(await claimKey(c, claim))) return replay(await readKey(c, m.tenantId, m.key), m.hash);

    // 2. Both rows, locked in id order, and decided by geopay's rules.
    const [from, to] = await this.lockLegs(c, m, src, dst);
    const now = this.opts.clock();
    const transferId = makeTransferId(regionOf(src), uuidv7Hex(now, randomBytes(10)));
    const decided = decideMove(from, to, { transferId, amount: m.amount, currency: m.currency });

    // 3. A business refusal is an answer like any other: stored with the key, committed.
    if (!decided.ok) {
      const answer = this.opts.rejectionAnswer(decided.code);
      await storeAnswer(c, m.tenantId, m.key, answer.status, answer.body);
      return failed(decided.code);
    }

    // 4. Balances, both postings, the transfer and the answer in one statement.
    const transfer: SettledTransfer = {
      id: transferId, kind: m.kind, sourceId: src, destinationId: dst, amount: m.amount, currency: m.currency,
      metadata: m.metadata, createdAt: new Date(now).toISOString(),
    };
    const view = transferView(transfer);
    const done = await applyMove(c, { tenantId: m.tenantId, key: m.key, transfer, legs: decided.legs, statusCode: STORED_CREATED, response: view });
    // Both rows and the key are this transaction's own (locked, inserted): anything else is our bug.
    invariant(done.moved === 2, 'a movement writes both of its locked account rows');
    invariant(done.keyed === 1, 'a movement stores its answer with its own key');
    return ok(view);
  }

  /**
   * Locks both rows in id order and makes the edge checks of geopay's payments layer, in its
   * order: whose accounts, the same account, the currency. The external account of a deposit
   * or withdrawal is created by the first movement through it.
   */
  private async lockLegs(c: Client, m: MoveRequest, src: AccountId, dst: AccountId): Promise<[AccountState, AccountState]> {
    const ids = [src, dst];
    let rows = await lockAccounts(c, ids);
    const mine = m.accounts.map((id) => rows.find((r) => r.id === id));
    // Another tenant's account is as missing as one that does not exist.
    for (const a of mine) if (!a || a.kind !== 'customer' || a.tenantId !== m.tenantId) throw new GeopayError('account_not_found');
    if (src === dst) throw new GeopayError('same_account');
    if (mine.some((a) => a?.currency !== m.currency)) throw new GeopayError('currency_mismatch');
    const ext = ids.find(isExternal);
    if (ext !== undefined && !rows.some((r) => r.id === ext)) {
      // 'ext_' sorts after 'acc_', so creating and locking it now keeps the id order of the locks.
      await createExternalAccount(c, ext, m.currency, regionOf(ext));
      rows = await lockAccounts(c, ids);
    }
    const from = rows.find((r) => r.id === src);
    const to = rows.find((r) => r.id === dst);
    if (!from || !to) throw new Error(`baseline: account row missing after lock (${src}, ${dst})`);
    return [from, to];
  }

  /** Forgets keys older than the retention every `everyMs`, as geopay does; returns the stop. */
  expireKeys(o: { retentionMs: number; everyMs: number }, logger: Logger): () => void {
    const timer = setInterval(() => {
      deleteExpiredBaselineKeys(this.pool, o.retentionMs)
        .then((n) => { if (n > 0) logger.info({ deleted: n }, 'expired baseline idempotency keys deleted'); })
        .catch((err: unknown) => logger.warn({ err }, 'baseline idempotency cleanup failed'));
    }, o.everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
