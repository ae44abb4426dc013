// What a resident account actor costs in memory: one fresh server on the local PostgreSQL is
// filled with N accounts through POST /v1/accounts (each open leaves its actor resident), and
// its heap and RSS, read from /metrics before and after, are divided by N. The target is
// 2 KB an actor, so a million resident accounts fit in 2 GiB.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { runMain, withOptions } from './lib/main.ts';
import { parsePositiveInt, UsageError } from './lib/options.ts';
import { withSession, type Session } from './lib/session.ts';
import { createTenant, inParallel, mustPost, setupKeys } from './lib/setup.ts';
import { fixed, formatTable } from './lib/table.ts';
import { readExposition, startTarget } from './lib/target.ts';

const USAGE = `usage: npm run bench:memory -- [--accounts N] [--clients C]
  --accounts N   account actors to make resident (default 20000)
  --clients C    concurrent opens and reads (default 64)
Other variables reach the server it starts, except MAX_RESIDENT_ACTORS and ACTOR_IDLE_MS,
which the bench sets so that no actor is passivated during the run.
`;

// Read once: the bench has no config module of its own.
const settings = Object.freeze({
  accounts: 20_000,
  clients: 64,
  /** Bytes per resident actor at most: 1M resident accounts in 2 GiB. */
  targetBytesPerActor: 2 * 1024,
  /** Far past the run: an actor passivated while we count would hide its cost. */
  actorIdleMs: 3_600_000,
  /** Samples of /metrics once idle; the lowest is kept (see settledReading). */
  settleSamples: 6,
  settleEveryMs: 1_000,
  residentDeadlineMs: 60_000,
  requestTimeoutMs: 30_000,
});

interface MemoryOptions { accounts: number; clients: number }

function parseOptions(argv: string[]): MemoryOptions | 'help' {
  let v;
  try {
    v = parseArgs({ args: argv, options: { accounts: { type: 'string' }, clients: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (v.help) return 'help';
  return {
    accounts: v.accounts === undefined ? settings.accounts : parsePositiveInt(v.accounts, '--accounts'),
    clients: v.clients === undefined ? settings.clients : parsePositiveInt(v.clients, '--clients'),
  };
}

interface MemoryReading { heapUsedBytes: number; rssBytes: number; resident: number }

async function readMemory(url: string): Promise<MemoryReading> {
  const metric = await readExposition(url);
  return {
    heapUsedBytes: metric('nodejs_heap_size_used_bytes'),
    rssBytes: metric('process_resident_memory_bytes'),
    resident: metric('geopay_actors_resident'),
  };
}

/**
 * The server's memory once idle, without a way to force its GC from outside: the lowest heap
 * and RSS over a few idle seconds. Garbage only adds to a reading, and V8's memory reducer
 * collects once the allocation rate drops, so the lowest sample is the nearest to what is live.
 */
async function settledReading(url: string): Promise<MemoryReading> {
  let low = await readMemory(url);
  for (let i = 1; i < settings.settleSamples; i++) {
    await sleep(settings.settleEveryMs);
    const r = await readMemory(url);
    low = { heapUsedBytes: Math.min(low.heapUsedBytes, r.heapUsedBytes), rssBytes: Math.min(low.rssBytes, r.rssBytes), resident: r.resident };
  }
  return low;
}

async function waitResident(url: string, atLeast: number): Promise<void> {
  const deadline = performance.now() + settings.residentDeadlineMs;
  for (;;) {
    const { resident } = await readMemory(url);
    if (resident >= atLeast) return;
    if (performance.now() > deadline) throw new Error(`only ${resident} actors resident after ${settings.residentDeadlineMs} ms, wanted ${atLeast}`);
    await sleep(200);
  }
}

interface Tenant { tenantId: string; tenantKey: string }

/** N accounts opened with `clients` in flight; their ids and the seconds it took. */
async function openAccounts(session: Session, tenant: Tenant, run: string, o: MemoryOptions): Promise<{ ids: string[]; seconds: number }> {
  const key = setupKeys(run);
  const t0 = performance.now();
  const ids = await inParallel(Array.from({ length: o.accounts }), o.clients, async () => {
    const req = { op: 'open', path: '/v1/accounts', body: { currency: 'USD' }, key: key('open'), bearer: tenant.tenantKey, tenant: tenant.tenantId };
    return String((await mustPost(session.client, req, [201])).id);
  });
  return { ids, seconds: (performance.now() - t0) / 1000 };
}

/** One read of every account: a resident actor answers from memory, so the heap should not move. */
async function touchAccounts(session: Session, tenant: Tenant, ids: string[], clients: number): Promise<void> {
  await inParallel(ids, clients, async (id) => {
    const r = await session.client.get(`/v1/accounts/${id}`, tenant.tenantKey);
    if (r.status !== 200) throw new Error(`GET /v1/accounts/${id} answered ${r.status ?? r.error}`);
  });
}

function printFigures(accounts: number, before: MemoryReading, readings: [string, MemoryReading][]): void {
  const perActor = (after: number, at: number): number => (after - at) / accounts;
  const mib = (b: number): string => fixed(b / 2 ** 20, 1);
  const header = ['reading', 'actors resident', 'heap used MiB', 'RSS MiB', 'heap B/actor', 'RSS B/actor', 'heap / target', 'RSS / target'];
  const row = (name: string, r: MemoryReading): string[] => {
    const heap = perActor(r.heapUsedBytes, before.heapUsedBytes);
    const rss = perActor(r.rssBytes, before.rssBytes);
    return [name, String(r.resident), mib(r.heapUsedBytes), mib(r.rssBytes), fixed(heap, 0), fixed(rss, 0),
      fixed(heap / settings.targetBytesPerActor, 2), fixed(rss / settings.targetBytesPerActor, 2)];
  };
  const rows = [[ 'before', String(before.resident), mib(before.heapUsedBytes), mib(before.rssBytes), '', '', '', ''], ...readings.map(([n, r]) => row(n, r))];
  console.log(`\n${formatTable(header, rows)}`);
  console.log(`\nper actor: (reading - before) / ${accounts}; target ${settings.targetBytesPerActor} B (1M resident accounts in 2 GiB)`);
}

async function bench(session: Session, run: string, o: MemoryOptions): Promise<number> {
  const { target } = session;
  console.log(`geopay bench:memory: ${o.accounts} accounts, ${o.clients} clients, server ${target.url} (pid ${target.server?.pid})`);
  const tenant = await createTenant(session.client, { adminKey: target.adminKey, run, liftRateLimits: true }, setupKeys(`${run}t`));
  const before = await settledReading(target.url);
  const opened = await openAccounts(session, tenant, run, o);
  console.log(`opened ${o.accounts} accounts in ${opened.seconds.toFixed(1)} s (${(o.accounts / opened.seconds).toFixed(0)} accounts/s)`);
  await waitResident(target.url, before.resident + o.accounts);
  const filled = await settledReading(target.url);
  await touchAccounts(session, tenant, opened.ids, o.clients);
  const touched = await settledReading(target.url);
  printFigures(o.accounts, before, [['after opening', filled], ['after one read each', touched]]);
  return 0;
}

runMain(() => withOptions(USAGE, () => parseOptions(process.argv.slice(2)), (o) => {
  const run = `mem${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  // Room above N, and idle far past the run: nothing may be passivated while we count.
  const serverEnv = { MAX_RESIDENT_ACTORS: String(o.accounts + 10_000), ACTOR_IDLE_MS: String(settings.actorIdleMs) };
  return withSession({
    target: () => startTarget({ start: 'postgres', engine: 'geopay', keepDb: false, serverEnv }),
    client: { connections: o.clients, timeoutMs: settings.requestTimeoutMs, retries: 0, run },
    onServerExit: (message, output) => console.error(`${message}:\n${output}`),
    // A failed run is a crash (exit 2), with what the server last said when it was ours.
    onError: (err, output) => {
      throw output === undefined ? err : new Error(`${(err as Error).message}\n--- server output tail ---\n${output}`, { cause: err });
    },
  }, (session) => bench(session, run, o));
}));
