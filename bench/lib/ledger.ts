// The ledger figures core and batch print after their run, read from geopay's tables once
// nothing is in flight: what the journal sums to, which transfers lack a leg or have one twice,
// what customers hold. Not the full checker (bench/checker.ts): the items of a batch share the
// batch's idempotency key, which the checker's key check would count as applied without one.
import pg from 'pg';
import { IN_FLIGHT, settle } from '../checker.ts';

export interface LedgerTotals {
  /** Transfers still debited or refused when the wait ran out. */
  inFlight: number;
  /** Every posting, external accounts included: 0 when no money was made or lost. */
  journalSum: bigint;
  /** Transfers without exactly one debit and one credit (or return) posting: a leg lost or applied twice. */
  unbalanced: number;
  /** What the customer accounts hold: their deposits, when transfers only moved money among them. */
  customerSum: bigint;
  /** The postings of each account asked about, summed (to hold against what the API answers). */
  accountSums: Map<string, bigint>;
}

export async function ledgerTotals(databaseUrl: string, settleTimeoutMs: number, accounts: string[] = []): Promise<LedgerTotals> {
  const sql = new pg.Client({ connectionString: databaseUrl });
  await sql.connect();
  const one = async (text: string, values: unknown[] = []): Promise<string> => (await sql.query<{ v: string }>(text, values)).rows[0]!.v;
  try {
    const inFlight = await settle(sql, 'transfers', IN_FLIGHT, settleTimeoutMs, []);
    const journalSum = BigInt(await one('SELECT coalesce(sum(amount), 0)::text AS v FROM journal'));
    const unbalanced = Number(await one(`SELECT count(*)::text AS v FROM (
        SELECT transfer_id FROM journal WHERE transfer_id IS NOT NULL GROUP BY transfer_id
        HAVING count(*) FILTER (WHERE amount < 0) <> 1 OR count(*) FILTER (WHERE amount > 0) <> 1) d`));
    const customerSum = BigInt(await one(`SELECT coalesce(sum(j.amount), 0)::text AS v FROM journal j
        JOIN accounts a ON a.id = j.account_id WHERE a.kind = 'customer'`));
    const accountSums = new Map<string, bigint>();
    for (const id of accounts) {
      accountSums.set(id, BigInt(await one('SELECT coalesce(sum(amount), 0)::text AS v FROM journal WHERE account_id = $1', [id])));
    }
    return { inFlight, journalSum, unbalanced, customerSum, accountSums };
  } finally {
    await sql.end();
  }
}
