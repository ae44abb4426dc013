// Model-based test: random command sequences run against the real actors and PostgreSQL, and
// a plain model of balances predicts every answer. After each sequence: balances equal the
// model, the ledger sums to 0, replaying the journal reproduces every balance, and no
// transfer leg was applied twice. fast-check prints the seed and path of a failing run.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';
import { loadAccount } from '../src/persistence/journal.ts';
import type { AccountId } from '../src/domain/ids.ts';

type Cmd =
  | { t: 'open'; currency: 'USD' | 'EUR' }
  | { t: 'deposit'; a: number; amount: number }
  | { t: 'withdraw'; a: number; amount: number }
  | { t: 'transfer'; from: number; to: number; amount: number }
  | { t: 'retry' }
  | { t: 'restart' };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ t: fc.constant('open' as const), currency: fc.constantFrom('USD' as const, 'EUR' as const) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('deposit' as const), a: fc.nat(20), amount: fc.integer({ min: 1, max: 30 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('withdraw' as const), a: fc.nat(20), amount: fc.integer({ min: 1, max: 25 }) }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('transfer' as const), from: fc.nat(20), to: fc.nat(20), amount: fc.integer({ min: 1, max: 20 }) }) },
  { weight: 2, arbitrary: fc.constant({ t: 'retry' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'restart' as const }) },
);

let t: TestNode;

beforeAll(async () => {
  // Snapshots every 3 postings, so recovery after a restart mixes snapshot and journal.
  t = await startTestNode('property', { snapshotEvery: 3, transferWaitMs: 5_000 });
});
afterAll(async () => { await t?.close(); });

interface ModelAccount { id: string; currency: 'USD' | 'EUR'; balance: bigint }

async function settleAll(): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const { rows } = await t.node.pool.query<{ n: bigint }>("SELECT count(*) AS n FROM transfers WHERE state IN ('debited', 'refused')");
    if (rows[0]!.n === 0n) return;
    await t.node.relay.runOnce(0);
  }
  throw new Error('transfers still in flight after 50 relay passes');
}

async function checkInvariants(key: string, model: ModelAccount[]): Promise<void> {
  await settleAll();
  for (const m of model) {
    const r = await t.call('GET', `/v1/accounts/${m.id}`, { key });
    expect(r.status).toBe(200);
    expect(r.body.balance, `balance of ${m.id}`).toBe(m.balance.toString());
  }
  const pool = t.node.pool;
  // The ledger: all balances, external accounts included, plus money in flight.
  const sum = await pool.query<{ s: bigint | null; f: bigint | null }>(
    "SELECT (SELECT sum(amount)::bigint FROM journal) AS s, (SELECT sum(amount)::bigint FROM transfers WHERE state IN ('debited','refused')) AS f");
  expect((sum.rows[0]!.s ?? 0n) + (sum.rows[0]!.f ?? 0n)).toBe(0n);
  // No leg applied twice, and every transfer has its one debit.
  const twice = await pool.query('SELECT transfer_id, kind FROM journal WHERE transfer_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1');
  expect(twice.rows).toEqual([]);
  const legs = await pool.query<{ id: string; state: string; debits: bigint; credits: bigint; returns: bigint }>(
    `SELECT t.id, t.state,
            count(*) FILTER (WHERE j.kind = 'debit') AS debits,
            count(*) FILTER (WHERE j.kind = 'credit') AS credits,
            count(*) FILTER (WHERE j.kind = 'return') AS returns
     FROM transfers t LEFT JOIN journal j ON j.transfer_id = t.id GROUP BY t.id, t.state`);
  for (const l of legs.rows) {
    expect(l.debits, `debits of ${l.id}`).toBe(1n);
    expect(l.credits + l.returns, `credit or return of ${l.id} (${l.state})`).toBe(1n);
  }
  // Replay from the first posting, ignoring snapshots, reproduces each balance and the chain.
  for (const m of model) {
    const { rows } = await pool.query<{ amount: bigint; balance_after: bigint; seq: bigint }>(
      'SELECT amount, balance_after, seq FROM journal WHERE account_id = $1 ORDER BY seq', [m.id]);
    let bal = 0n;
    rows.forEach((r, i) => {
      expect(r.seq).toBe(BigInt(i + 1));
      bal += r.amount;
      expect(r.balance_after).toBe(bal);
    });
    expect(bal).toBe(m.balance);
    const loaded = await loadAccount(pool, m.id as AccountId);
    expect(loaded.state?.balance).toBe(m.balance);
  }
}

describe('account model against real actors and PostgreSQL', () => {
  it('agrees with the model and keeps the ledger at 0', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 30 }), async (cmds) => {
        const { key } = await t.tenant('prop');
        const model: ModelAccount[] = [];
        let last: { method: string; url: string; body: unknown; idem: string; status: number; resBody: unknown } | undefined;
        const pick = (i: number) => model[i % model.length]!;
        for (const c of cmds) {
          if (c.t !== 'open' && c.t !== 'restart' && c.t !== 'retry' && model.length === 0) continue;
          switch (c.t) {
            case 'open': {
              const id = await t.account(key, c.currency);
              model.push({ id, currency: c.currency, balance: 0n });
              break;
            }
            case 'deposit': {
              const a = pick(c.a);
              const body = { accountId: a.id, amount: String(c.amount), currency: a.currency };
              const k = idem();
              const r = await t.call('POST', '/v1/deposits', { key, idem: k, body });
              expect(r.status).toBe(201);
              a.balance += BigInt(c.amount);
              last = { method: 'POST', url: '/v1/deposits', body, idem: k, status: r.status, resBody: r.body };
              break;
            }
            case 'withdraw': {
              const a = pick(c.a);
              const body = { accountId: a.id, amount: String(c.amount), currency: a.currency };
              const k = idem();
              const r = await t.call('POST', '/v1/withdrawals', { key, idem: k, body });
              if (a.balance >= BigInt(c.amount)) {
                expect(r.status).toBe(201);
                a.balance -= BigInt(c.amount);
              } else {
                expect(r.status).toBe(422);
                expect(r.body.code).toBe('insufficient_funds');
              }
              last = { method: 'POST', url: '/v1/withdrawals', body, idem: k, status: r.status, resBody: r.body };
              break;
            }
            case 'transfer': {
              const from = pick(c.from);
              const to = pick(c.to);
              const body = { sourceAccountId: from.id, destinationAccountId: to.id, amount: String(c.amount), currency: from.currency };
              const k = idem();
              const r = await t.call('POST', '/v1/transfers', { key, idem: k, body });
              if (from === to) {
                expect(r.body.code).toBe('same_account');
              } else if (from.currency !== to.currency) {
                expect(r.body.code).toBe('currency_mismatch');
              } else if (from.balance >= BigInt(c.amount)) {
                expect(r.status).toBe(201);
                expect(r.body.state).toBe('settled');
                from.balance -= BigInt(c.amount);
                to.balance += BigInt(c.amount);
              } else {
                expect(r.status).toBe(422);
                expect(r.body.code).toBe('insufficient_funds');
              }
              last = { method: 'POST', url: '/v1/transfers', body, idem: k, status: r.status, resBody: r.body };
              break;
            }
            case 'retry': {
              if (!last) break;
              // A duplicate with the same key: the same answer, nothing applied again.
              const r = await t.call(last.method, last.url, { key, idem: last.idem, body: last.body });
              expect(r.status).toBe(last.status);
              expect(r.body).toEqual(last.resBody);
              break;
            }
            case 'restart':
              await t.restart();
              break;
          }
        }
        await checkInvariants(key, model);
      }),
      { numRuns: Number(process.env.PROPERTY_RUNS ?? 25), endOnFailure: true },
    );
  }, 240_000);
});
