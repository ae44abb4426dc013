// The ledger checker against real ledgers: a geopay node writes one (deposits, transfers, a
// withdrawal, holds captured and voided, a refund, snapshots), the checker passes it; then
// each case plants one bug inside a transaction that is rolled back, and the checker must
// fail naming the account and the seq where the bug shows. The same for the baseline engine.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { check, type CheckResult } from '../bench/checker.ts';
import type { RequestRecord } from '../bench/lib/request-log.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { idem, startTestNode, type TestNode } from './helpers/node.ts';
import { api, startServer, type ServerProcess } from './helpers/server-process.ts';

let t: TestNode;
let client: pg.Client;
const log: RequestRecord[] = [];
let tenantId: string;
let alice: string;
let bob: string;
let carol: string;
let overdrawn: string;

/** A money POST through the node, recorded the way the load test records it. */
async function money(key: string, op: string, path: string, body: Record<string, unknown>): Promise<any> {
  const k = idem();
  const r = await t.call('POST', path, { key, idem: k, body });
  log.push({
    ts: new Date().toISOString(), run: 'checker-test', phase: 'test', engine: 'geopay', tenant: tenantId, op, method: 'POST', path,
    key: k, body, attempt: 1, status: r.status, answer: r.body, ms: 0,
  });
  if (r.status !== 201 && r.status !== 202) throw new Error(`${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Runs `plant` and the checker in one transaction, then rolls the plant back. */
async function planted(plant: (c: pg.Client) => Promise<void>, requests: RequestRecord[] = log): Promise<CheckResult> {
  await client.query('BEGIN');
  try {
    await plant(client);
    const r = await check(client, { requests });
    // SHOW_FAILURES=1 prints what the checker said, to judge the messages by eye.
    if (process.env.SHOW_FAILURES) console.log(r.failures.join('\n'));
    return r;
  } finally {
    await client.query('ROLLBACK');
  }
}

const rowsOf = async (sql: string, params: unknown[] = []): Promise<any[]> => (await client.query(sql, params)).rows;

/** A settled transfer's credit that is neither the first nor the last posting of its account. */
async function middleCredit(): Promise<{ account: string; seq: number; transferId: string; amount: bigint }> {
  const [r] = await rowsOf(`
    SELECT j.account_id, j.seq::int AS seq, j.transfer_id, j.amount::text AS amount FROM journal j JOIN transfers t ON t.id = j.transfer_id
     WHERE j.kind = 'credit' AND t.state = 'settled' AND j.account_id LIKE 'acc\\_%'
       AND j.seq < (SELECT max(seq) FROM journal x WHERE x.account_id = j.account_id) AND j.seq > 2
     ORDER BY j.account_id, j.seq LIMIT 1`);
  expect(r, 'the ledger has a credit in the middle of an account').toBeDefined();
  return { account: r.account_id, seq: r.seq, transferId: r.transfer_id, amount: BigInt(r.amount) };
}

const naming = (res: CheckResult, ...parts: string[]): string[] => res.failures.filter((f) => parts.every((p) => f.includes(p)));

beforeAll(async () => {
  // Snapshots every 3 postings, so the snapshot check has something to compare.
  t = await startTestNode('checker', { snapshotEvery: 3 });
  const tenant = await t.tenant('checker');
  tenantId = tenant.id;
  const key = tenant.key;
  [alice, bob, carol] = [await t.account(key), await t.account(key), await t.account(key)];
  overdrawn = await t.account(key, 'USD', { overdraftLimit: '100' });
  for (const a of [alice, bob, carol, overdrawn]) await money(key, 'deposit', '/v1/deposits', { accountId: a, amount: '10000', currency: 'USD' });
  const pairs = [[alice, bob], [bob, carol], [carol, alice], [alice, carol], [bob, alice], [carol, bob], [alice, overdrawn], [overdrawn, bob]];
  for (const [i, [src, dst]] of pairs.entries()) {
    await money(key, 'transfer', '/v1/transfers', { sourceAccountId: src, destinationAccountId: dst, amount: String(100 + i * 7), currency: 'USD' });
  }
  await money(key, 'withdraw', '/v1/withdrawals', { accountId: bob, amount: '250', currency: 'USD' });
  // Holds and refunds write postings of their own kinds (hold, capture, release, refund debit).
  const captured = (await t.call('POST', '/v1/holds', { key, idem: idem(), body: { sourceAccountId: alice, destinationAccountId: carol, amount: '300', currency: 'USD' } })).body;
  expect(captured.id).toBeDefined();
  expect((await t.call('POST', `/v1/holds/${captured.id}/capture`, { key, idem: idem(), body: { amount: '200' } })).status).toBe(201);
  const voided = (await t.call('POST', '/v1/holds', { key, idem: idem(), body: { sourceAccountId: bob, destinationAccountId: alice, amount: '400', currency: 'USD' } })).body;
  expect((await t.call('POST', `/v1/holds/${voided.id}/void`, { key, idem: idem() })).status).toBe(200);
  const active = await t.call('POST', '/v1/holds', { key, idem: idem(), body: { sourceAccountId: carol, destinationAccountId: bob, amount: '150', currency: 'USD' } });
  expect(active.status).toBe(201);
  const paid = await money(key, 'transfer', '/v1/transfers', { sourceAccountId: carol, destinationAccountId: alice, amount: '500', currency: 'USD' });
  expect((await t.call('POST', `/v1/transfers/${paid.id}/refunds`, { key, idem: idem(), body: { amount: '120' } })).status).toBe(201);
  for (let i = 0; i < 4; i++) {
    await money(key, 'transfer', '/v1/transfers', { sourceAccountId: bob, destinationAccountId: alice, amount: String(50 + i), currency: 'USD' });
  }
  client = new pg.Client({ connectionString: t.db.url });
  await client.connect();
}, 60_000);

afterAll(async () => {
  await client?.end();
  await t?.close();
});

describe('checker on a geopay ledger', () => {
  it('passes the ledger the node wrote, with its request log', async () => {
    const res = await check(client, { requests: log, settleTimeoutMs: 10_000 });
    expect(res.failures).toEqual([]);
    expect(res.ok).toBe(true);
    expect(res.engines).toEqual(['geopay']);
    expect(res.stats.acknowledgedTransfers).toBe(log.length);
    expect(res.stats.snapshots).toBeGreaterThan(0);
    expect(res.stats.activeHolds).toBe(1);
    // Stop the node: the plants below lock the journal, and nothing may write meanwhile.
    await t.node.stop();
  });

  it('fails on a duplicated posting (a credit applied twice), naming the account and seq', async () => {
    const c = await middleCredit();
    let dupSeq = 0;
    const res = await planted(async (db) => {
      // The unique index would refuse the twin: the bug being planted is the index's absence.
      await db.query('DROP INDEX journal_transfer_once');
      const [last] = (await db.query("SELECT seq::int AS seq, balance_after::text AS b FROM journal WHERE account_id = $1 ORDER BY seq DESC LIMIT 1", [c.account])).rows;
      dupSeq = last.seq + 1;
      await db.query(
        `INSERT INTO journal (account_id, seq, kind, transfer_id, amount, balance_after, epoch, node_id, created_at)
         SELECT account_id, $2, kind, transfer_id, amount, $3, epoch, node_id, now() FROM journal WHERE account_id = $1 AND seq = $4`,
        [c.account, dupSeq, (BigInt(last.b) + c.amount).toString(), c.seq],
      );
    });
    expect(res.ok).toBe(false);
    expect(naming(res, 'transfer:', c.transferId, 'credited 2 times', `${c.account} seq ${c.seq}`, `${c.account} seq ${dupSeq}`)).toHaveLength(1);
    expect(naming(res, 'ledger:', 'USD')).toHaveLength(1);
  });

  it('fails on a missing credit, naming the account and the seq that is gone', async () => {
    const c = await middleCredit();
    const res = await planted(async (db) => {
      await db.query('DELETE FROM journal WHERE account_id = $1 AND seq = $2', [c.account, c.seq]);
    });
    expect(res.ok).toBe(false);
    expect(naming(res, 'seq:', `account ${c.account}`, `missing seq ${c.seq}`)).toHaveLength(1);
    expect(naming(res, 'transfer:', c.transferId, 'settled, but no credit posting', c.account)).toHaveLength(1);
    expect(naming(res, 'replay:', `account ${c.account} seq ${c.seq + 1}`)).toHaveLength(1);
    expect(naming(res, 'ledger:')).toHaveLength(1);
  });

  it('fails on a gap in seq, naming the account and the missing seq', async () => {
    const [{ n }] = await rowsOf('SELECT count(*)::int AS n FROM journal WHERE account_id = $1', [alice]);
    const from = 3;
    expect(n).toBeGreaterThan(from);
    const res = await planted(async (db) => {
      // Two steps, so no intermediate row collides on the primary key.
      await db.query('UPDATE journal SET seq = seq + 100000 WHERE account_id = $1 AND seq >= $2', [alice, from]);
      await db.query('UPDATE journal SET seq = seq - 99999 WHERE account_id = $1 AND seq >= 100000', [alice]);
    });
    expect(res.ok).toBe(false);
    expect(naming(res, 'seq:', `account ${alice}: seq ${from + 1} follows seq ${from - 1} (missing seq ${from})`)).toHaveLength(1);
    // Nothing was lost or doubled: the ledger still balances and every transfer still has its legs.
    expect(naming(res, 'ledger:')).toEqual([]);
    expect(naming(res, 'transfer:')).toEqual([]);
  });

  it('fails on a balance below -overdraft_limit, and on nothing else', async () => {
    let seq = 0;
    let below = 0n;
    const res = await planted(async (db) => {
      const [last] = (await db.query('SELECT seq::int AS seq, balance_after::text AS b, epoch FROM journal WHERE account_id = $1 ORDER BY seq DESC LIMIT 1', [overdrawn])).rows;
      seq = last.seq + 1;
      below = -101n;
      const amount = BigInt(last.b) - below;
      // A consistent debit in flight (transfer row, posting, key): only the overdraft is wrong.
      const id = 'tr_local_0000000000007000800000000000beef';
      await db.query(
        `INSERT INTO transfers (id, tenant_id, kind, source_id, destination_id, amount, currency, state, created_at, updated_at)
         VALUES ($1, $2, 'transfer', $3, $4, $5, 'USD', 'debited', now(), now())`, [id, tenantId, overdrawn, bob, amount.toString()]);
      await db.query(
        `INSERT INTO journal (account_id, seq, kind, transfer_id, amount, balance_after, epoch, node_id, created_at)
         VALUES ($1, $2, 'debit', $3, $4, $5, $6, 'node-1', now())`, [overdrawn, seq, id, (-amount).toString(), below.toString(), last.epoch]);
      await db.query("INSERT INTO idempotency_keys (tenant_id, key, request_hash, resource_id) VALUES ($1, 'planted', 'x', $2)", [tenantId, id]);
    });
    expect(res.ok).toBe(false);
    expect(res.failures).toEqual([`overdraft: account ${overdrawn} seq ${seq}: balance ${below} is below -overdraft_limit (-100)`]);
  });

  it('fails when epochs go backwards or pass the shard epoch', async () => {
    const [{ shard, epoch }] = await rowsOf('SELECT a.shard, s.epoch::text AS epoch FROM accounts a JOIN shards s ON s.id = a.shard WHERE a.id = $1', [carol]);
    const res = await planted(async (db) => {
      await db.query('UPDATE journal SET epoch = $3 WHERE account_id = $1 AND seq = $2', [carol, 2, (BigInt(epoch) + 5n).toString()]);
    });
    expect(naming(res, 'epoch:', `account ${carol} seq 2`, `beyond shard ${shard}'s current epoch ${epoch}`)).toHaveLength(1);
    expect(naming(res, 'epoch:', `account ${carol} seq 3`, 'went backwards')).toHaveLength(1);
  });

  it('fails when a snapshot disagrees with the journal at its seq', async () => {
    const [s] = await rowsOf("SELECT account_id, seq::int AS seq FROM snapshots WHERE account_id LIKE 'acc\\_%' ORDER BY account_id LIMIT 1");
    const res = await planted(async (db) => {
      await db.query(`UPDATE snapshots SET state = jsonb_set(state, '{balance}', '"987654"') WHERE account_id = $1`, [s.account_id]);
    });
    expect(naming(res, 'snapshot:', `account ${s.account_id} seq ${s.seq}`, 'snapshot balance 987654')).toHaveLength(1);
  });

  it('fails when the request log shows a key answering two transfers, or an acknowledged transfer is missing', async () => {
    const first = log.find((r) => r.op === 'transfer')!;
    const twin: RequestRecord = { ...first, attempt: 2, answer: { ...(first.answer as object), id: 'tr_local_00000000000070008000000000000001' } };
    const lost: RequestRecord = { ...first, key: 'lost-key', answer: { ...(first.answer as object), id: 'tr_local_00000000000070008000000000000002' } };
    const res = await check(client, { requests: [...log, twin, lost] });
    expect(res.ok).toBe(false);
    expect(naming(res, 'idempotency:', `key ${first.key}`, 'answered two transfers', (first.answer as { id: string }).id)).toHaveLength(1);
    expect(naming(res, 'acknowledged:', 'tr_local_00000000000070008000000000000002', 'key lost-key', 'not in transfers')).toHaveLength(1);
  });

  it('fails when a transfer was applied twice under one key (a twin without its own key)', async () => {
    const res = await planted(async (db) => {
      const [orig] = (await db.query("SELECT * FROM transfers WHERE kind = 'transfer' AND state = 'settled' ORDER BY id LIMIT 1")).rows;
      await db.query(
        `INSERT INTO transfers (id, tenant_id, kind, source_id, destination_id, amount, currency, state, created_at, updated_at)
         VALUES ('tr_local_0000000000007000800000000000d0b1', $1, 'transfer', $2, $3, $4, 'USD', 'debited', now(), now())`,
        [orig.tenant_id, orig.source_id, orig.destination_id, orig.amount.toString()]);
    });
    expect(naming(res, 'idempotency:', 'tr_local_0000000000007000800000000000d0b1', 'no idempotency key')).toHaveLength(1);
    expect(naming(res, 'transfer:', 'tr_local_0000000000007000800000000000d0b1', 'no debit posting')).toHaveLength(1);
  });
});

describe('checker on a baseline ledger', () => {
  let bdb: TestDatabase;
  let server: ServerProcess;
  let bc: pg.Client;
  const blog: RequestRecord[] = [];
  const accounts: string[] = [];

  beforeAll(async () => {
    bdb = await createTestDatabase('checker_baseline');
    const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
    server = await startServer({ databaseUrl: bdb.url, adminKey, env: { ENGINE: 'baseline' } });
    const admin = api(server.url, adminKey);
    const tenant = (await admin.post('/v1/tenants', { name: 'baseline' })).body;
    const key = (await admin.post(`/v1/tenants/${tenant.id}/keys`)).body.key as string;
    const client = api(server.url, key);
    const post = async (op: string, path: string, body: Record<string, unknown>): Promise<void> => {
      const k = idem();
      const r = await client.post(path, body, k);
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      blog.push({ ts: new Date().toISOString(), run: 'checker-test', phase: 'test', engine: 'baseline', tenant: tenant.id, op, method: 'POST', path, key: k, body, attempt: 1, status: r.status, answer: r.body, ms: 0 });
    };
    for (let i = 0; i < 3; i++) accounts.push((await client.post('/v1/accounts', { currency: 'USD' })).body.id);
    for (const a of accounts) await post('deposit', '/v1/deposits', { accountId: a, amount: '5000', currency: 'USD' });
    for (let i = 0; i < 6; i++) {
      await post('transfer', '/v1/transfers', { sourceAccountId: accounts[i % 3], destinationAccountId: accounts[(i + 1) % 3], amount: String(100 + i), currency: 'USD' });
    }
    await post('withdraw', '/v1/withdrawals', { accountId: accounts[0], amount: '42', currency: 'USD' });
    await server.kill();
    bc = new pg.Client({ connectionString: bdb.url });
    await bc.connect();
  }, 60_000);

  afterAll(async () => {
    await bc?.end();
    await server?.kill();
    await bdb?.drop();
  });

  it('passes the ledger the baseline wrote, and fails on a lost credit naming account and seq', async () => {
    const ok = await check(bc, { requests: blog });
    expect(ok.failures).toEqual([]);
    expect(ok.engines).toEqual(['baseline']);
    expect(ok.stats.baselineTransfers).toBe(blog.length);

    const [credit] = (await bc.query(`SELECT account_id, seq::int AS seq, transfer_id FROM baseline_journal
      WHERE amount > 0 AND account_id LIKE 'acc\\_%' AND seq > 2 AND seq < (SELECT max(seq) FROM baseline_journal x WHERE x.account_id = baseline_journal.account_id)
      ORDER BY account_id, seq LIMIT 1`)).rows;
    await bc.query('BEGIN');
    try {
      await bc.query('DELETE FROM baseline_journal WHERE account_id = $1 AND seq = $2', [credit.account_id, credit.seq]);
      const res = await check(bc, { requests: blog });
      if (process.env.SHOW_FAILURES) console.log(res.failures.join('\n'));
      expect(res.ok).toBe(false);
      expect(naming(res, 'seq:', `baseline account ${credit.account_id}`, `missing seq ${credit.seq}`)).toHaveLength(1);
      expect(naming(res, 'replay:', `baseline account ${credit.account_id} seq ${credit.seq + 1}`)).toHaveLength(1);
      expect(naming(res, 'transfer:', credit.transfer_id, '0 credit(s)')).toHaveLength(1);
      expect(naming(res, 'ledger:', 'baseline USD')).toHaveLength(1);
      expect(naming(res, 'balance:', `baseline account ${credit.account_id}`)).toHaveLength(1);
    } finally {
      await bc.query('ROLLBACK');
    }
  });
});
