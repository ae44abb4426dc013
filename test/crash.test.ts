// Crash recovery end to end: SIGKILL the server in the middle of a stream of transfers,
// restart it on the same database, and check from the journal that every acknowledged
// transfer moved its money exactly once and that the ledger still sums to zero. Only a real
// process kill can lose in-memory state at an arbitrary point, hence the child process.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { api, startServer, type Api, type ServerProcess } from './helpers/server-process.ts';

const accountCount = 20;
const depositMinor = 1_000_000n;
const streamLoops = 16;
/** Long enough for a few thousand transfers, so the kill lands in a busy stream. */
const streamBeforeKillMs = 1_500;
/** The relay re-delivers every RELAY_INTERVAL_MS; 200 ms keeps the wait short. */
const relayIntervalMs = 200;
const settleDeadlineMs = 20_000;

interface Sent {
  key: string;
  source: string;
  destination: string;
  amount: bigint;
}
interface Acked extends Sent {
  id: string;
}

// int8 as bigint, for this client only: a sum of balances must not go through a float.
const int8AsBigInt = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? (v: string) => BigInt(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
let db: TestDatabase;
let server: ServerProcess | undefined;
let sql: pg.Client | undefined;
let tenant: Api;
const accounts: string[] = [];
const acked: Acked[] = [];
/** Requests with no answer: refused connection or cut by the kill. They may or may not have committed. */
const unanswered: Sent[] = [];
const otherStatuses = new Map<number, number>();

beforeAll(async () => {
  db = await createTestDatabase('crash');
});

afterAll(async () => {
  await sql?.end();
  await server?.kill();
  await db?.drop();
});

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

async function query<R extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<R[]> {
  return (await sql!.query<R>(text, params)).rows;
}

/**
 * Polls until the relay has finished every transfer. `debited` waits for its credit and
 * `refused` (the credit was refused) for the return of the money: both are still in flight.
 */
async function waitForNothingInFlight(): Promise<number> {
  const deadline = Date.now() + settleDeadlineMs;
  for (;;) {
    const [row] = await query<{ n: bigint }>(
      `SELECT count(*) AS n FROM transfers WHERE state IN ('debited', 'refused')`,
    );
    if (row!.n === 0n || Date.now() > deadline) return Number(row!.n);
    await sleep(200);
  }
}

/** Checks that each transfer has one debit on its source and one credit (or return), per the journal. */
async function expectExactlyOnce(sent: Acked[]): Promise<void> {
  const ids = sent.map((t) => t.id);
  const states = new Map(
    (await query<{ id: string; state: string }>(`SELECT id, state FROM transfers WHERE id = ANY($1)`, [ids])).map(
      (r) => [r.id, r.state],
    ),
  );
  const postings = await query<{ transfer_id: string; account_id: string; amount: bigint }>(
    `SELECT transfer_id, account_id, amount FROM journal WHERE transfer_id = ANY($1)`,
    [ids],
  );
  const byTransfer = new Map<string, { account_id: string; amount: bigint }[]>();
  for (const p of postings) {
    const list = byTransfer.get(p.transfer_id) ?? [];
    list.push(p);
    byTransfer.set(p.transfer_id, list);
  }
  const wrong: string[] = [];
  for (const t of sent) {
    const state = states.get(t.id);
    const ps = byTransfer.get(t.id) ?? [];
    const debits = ps.filter((p) => p.amount < 0n);
    const credits = ps.filter((p) => p.amount > 0n);
    // A returned transfer's positive posting goes back to the source.
    const creditedTo = state === 'returned' ? t.source : t.destination;
    const ok =
      (state === 'settled' || state === 'returned') &&
      debits.length === 1 &&
      credits.length === 1 &&
      debits[0]!.account_id === t.source &&
      debits[0]!.amount === -t.amount &&
      credits[0]!.account_id === creditedTo &&
      credits[0]!.amount === t.amount;
    if (!ok) {
      wrong.push(`${t.id} state=${String(state)} postings=${ps.map((p) => `${p.account_id}:${p.amount}`).join(',')}`);
    }
  }
  expect(wrong, `transfers not applied exactly once (of ${sent.length})`).toEqual([]);
}

/** The ledger-wide invariants, which also cover transfers whose answer was lost in the kill. */
async function expectLedgerBalanced(): Promise<void> {
  const states = await query<{ state: string; n: bigint }>(
    `SELECT state, count(*) AS n FROM transfers GROUP BY state ORDER BY state`,
  );
  for (const s of states) expect(['settled', 'returned'], `transfers in state ${s.state}`).toContain(s.state);

  const doubled = await query<{ transfer_id: string; neg: bigint; pos: bigint }>(
    `SELECT transfer_id, count(*) FILTER (WHERE amount < 0) AS neg, count(*) FILTER (WHERE amount > 0) AS pos
       FROM journal WHERE transfer_id IS NOT NULL
      GROUP BY transfer_id
     HAVING count(*) FILTER (WHERE amount < 0) <> 1 OR count(*) FILTER (WHERE amount > 0) <> 1`,
  );
  expect(doubled, 'transfers with other than one debit and one credit posting').toEqual([]);

  const [total] = await query<{ total: string }>(`SELECT coalesce(sum(amount), 0)::text AS total FROM journal`);
  expect(total!.total).toBe('0');

  // Each row's balance_after is the previous one plus its amount, with no gap in seq: a lost
  // or replayed event would break the chain even where the total happens to match.
  const broken = await query<{ account_id: string; seq: number }>(
    `SELECT account_id, seq FROM (
       SELECT account_id, seq, amount, balance_after,
              lag(balance_after) OVER w AS prev_balance, lag(seq) OVER w AS prev_seq
         FROM journal WINDOW w AS (PARTITION BY account_id ORDER BY seq)) j
      WHERE (prev_seq IS NOT NULL AND seq <> prev_seq + 1)
         OR balance_after <> coalesce(prev_balance, 0) + amount
      LIMIT 20`,
  );
  expect(broken, 'journal rows whose balance_after or seq does not follow the previous row').toEqual([]);

  const sums = new Map(
    (
      await query<{ account_id: string; total: string }>(
        `SELECT account_id, sum(amount)::text AS total FROM journal WHERE account_id = ANY($1) GROUP BY account_id`,
        [accounts],
      )
    ).map((r) => [r.account_id, BigInt(r.total)]),
  );
  let customerTotal = 0n;
  for (const id of accounts) {
    const res = await tenant.get(`/v1/accounts/${id}`);
    expect(res.status).toBe(200);
    expect(BigInt(res.body.balance), `balance of ${id}`).toBe(sums.get(id));
    customerTotal += BigInt(res.body.balance);
  }
  // Transfers between customers move money around; only the deposits brought it in.
  expect(customerTotal).toBe(depositMinor * BigInt(accountCount));
}

describe('crash recovery', () => {
  it('applies every acknowledged transfer exactly once across a SIGKILL and restart', async () => {
    server = await startServer({ databaseUrl: db.url, adminKey, env: { RELAY_INTERVAL_MS: String(relayIntervalMs) } });
    const admin = api(server.url, adminKey);

    const t = await admin.post('/v1/tenants', { name: 'crash' });
    expect(t.status, JSON.stringify(t.body)).toBe(201);
    const k = await admin.post(`/v1/tenants/${t.body.id}/keys`);
    expect(k.status, JSON.stringify(k.body)).toBe(201);
    const tenantKey: string = k.body.key;

    const opened = await Promise.all(
      Array.from({ length: accountCount }, () => api(server!.url, tenantKey).post('/v1/accounts', { currency: 'USD' })),
    );
    for (const o of opened) {
      expect(o.status, JSON.stringify(o.body)).toBe(201);
      accounts.push(o.body.id);
    }
    const deposits = await Promise.all(
      accounts.map((accountId) =>
        api(server!.url, tenantKey).post('/v1/deposits', { accountId, amount: String(depositMinor), currency: 'USD' }),
      ),
    );
    for (const d of deposits) expect([201, 202], JSON.stringify(d.body)).toContain(d.status);

    // A dispatcher of our own, so the sockets the kill leaves dangling can be destroyed.
    const agent = new Agent({ connections: streamLoops, keepAliveTimeout: 10_000 });
    const stream = api(server.url, tenantKey, { dispatcher: agent });
    let stop = false;
    const loop = async (): Promise<void> => {
      while (!stop) {
        const source = pick(accounts);
        let destination = pick(accounts);
        while (destination === source) destination = pick(accounts);
        const sent: Sent = { key: randomUUID(), source, destination, amount: BigInt(1 + Math.floor(Math.random() * 100)) };
        try {
          const res = await stream.post(
            '/v1/transfers',
            { sourceAccountId: source, destinationAccountId: destination, amount: String(sent.amount), currency: 'USD' },
            sent.key,
          );
          if (res.status === 201 || res.status === 202) acked.push({ ...sent, id: res.body.id });
          else otherStatuses.set(res.status, (otherStatuses.get(res.status) ?? 0) + 1);
        } catch {
          unanswered.push(sent);
        }
      }
    };
    const loops = Array.from({ length: streamLoops }, loop);
    await sleep(streamBeforeKillMs);
    // Stop only after the process is gone, so requests are still in flight when it dies.
    await server.kill('SIGKILL');
    stop = true;
    await Promise.all(loops);
    await agent.destroy();

    expect(acked.length, 'transfers acknowledged before the kill').toBeGreaterThan(0);
    expect(unanswered.length, 'requests cut by the kill (proves it landed mid-stream)').toBeGreaterThan(0);
    expect(Object.fromEntries(otherStatuses), 'answers other than 201/202 before the kill').toEqual({});

    server = await startServer({ databaseUrl: db.url, adminKey, env: { RELAY_INTERVAL_MS: String(relayIntervalMs) } });
    tenant = api(server.url, tenantKey);
    sql = new pg.Client({ connectionString: db.url, types: int8AsBigInt });
    await sql.connect();

    const [pending] = await query<{ n: bigint }>(
      `SELECT count(*) AS n FROM transfers WHERE state IN ('debited', 'refused')`,
    );
    console.info(
      `crash: ${acked.length} acknowledged, ${unanswered.length} unanswered, ${pending!.n} in flight at restart`,
    );
    expect(await waitForNothingInFlight(), 'transfers still debited after the relay deadline').toBe(0);
    await expectExactlyOnce(acked);
    await expectLedgerBalanced();

    // The API agrees with the journal about the outcome.
    for (const a of acked.slice(0, 20)) {
      const res = await tenant.get(`/v1/transfers/${a.id}`);
      expect(res.status).toBe(200);
      expect(res.body.state).toBe('settled');
      expect(res.body.amount).toBe(String(a.amount));
    }
  });

  it('resolves client retries of unanswered requests to exactly one transfer each', async () => {
    expect(acked.length, 'the crash test must have run first').toBeGreaterThan(0);
    // Transfers that exist before the retries: the acknowledged ones plus any that committed
    // although their answer was lost.
    const known = new Set(
      (await query<{ id: string }>(`SELECT id FROM transfers WHERE kind = 'transfer'`)).map((r) => r.id),
    );
    for (const a of acked) expect(known.has(a.id), `acknowledged ${a.id} is in transfers`).toBe(true);

    // What a client does after a lost answer: the same request with the same key, until it
    // gets a definite answer. 409 (still in progress) and 503 are retryable by contract.
    const retried: Acked[] = [];
    for (const u of unanswered) {
      const body = { sourceAccountId: u.source, destinationAccountId: u.destination, amount: String(u.amount), currency: 'USD' };
      let res = await tenant.post('/v1/transfers', body, u.key);
      for (let i = 0; i < 25 && (res.status === 409 || res.status === 503); i++) {
        await sleep(200);
        res = await tenant.post('/v1/transfers', body, u.key);
      }
      expect([201, 202], `retry of ${u.key}: ${JSON.stringify(res.body)}`).toContain(res.status);
      retried.push({ ...u, id: res.body.id });
    }
    expect(await waitForNothingInFlight()).toBe(0);
    await expectExactlyOnce(retried);
    await expectLedgerBalanced();

    // Every key we ever sent owns exactly one transfer: a retry of a request that had
    // committed before the kill must find it, not move the money a second time.
    const ids = new Set([...acked, ...retried].map((a) => a.id));
    expect(ids.size).toBe(acked.length + retried.length);
    const [after] = await query<{ n: bigint }>(`SELECT count(*) AS n FROM transfers WHERE kind = 'transfer'`);
    expect(after!.n).toBe(BigInt(acked.length + unanswered.length));
    const fresh = retried.filter((r) => !known.has(r.id)).length;
    console.info(`retries: ${retried.length - fresh} found their committed transfer, ${fresh} created one`);
    expect(after!.n).toBe(BigInt(known.size + fresh));
  });
});
