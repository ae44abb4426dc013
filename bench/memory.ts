// What a resident account actor costs in memory: one fresh server on the local PostgreSQL is
// filled with N accounts through POST /v1/accounts (each open leaves its actor resident), and
// its heap and RSS, read from /metrics before and after a full GC, are divided by N. The
// target is 2 KB an actor, so a million resident accounts fit in 2 GiB.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { WebSocket } from 'undici';
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
which the bench sets so that no actor is passivated during the run, and NODE_OPTIONS, to
which it adds --inspect=127.0.0.1:0 (to ask the server for a full GC before each reading).
`;

// Read once: the bench has no config module of its own.
const settings = Object.freeze({
  accounts: 20_000,
  clients: 64,
  /** Bytes per resident actor at most: 1M resident accounts in 2 GiB. */
  targetBytesPerActor: 2 * 1024,
  /** Far past the run: an actor passivated while we count would hide its cost. */
  actorIdleMs: 3_600_000,
  /** The server's inspector, on a port of its choosing, only for the bench to ask it for a full GC. */
  inspectorOption: '--inspect=127.0.0.1:0',
  gcTimeoutMs: 60_000,
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

/** Where the server's inspector listens: node prints it on stderr at start. */
function inspectorUrl(output: string): string {
  const m = /Debugger listening on (ws:\/\/\S+)/.exec(output);
  if (!m) throw new Error(`the server printed no inspector address (NODE_OPTIONS ${settings.inspectorOption}):\n${output}`);
  return m[1]!;
}

/**
 * A full GC in the server, through its inspector (HeapProfiler.collectGarbage). Garbage is no
 * actor's cost, and V8 may leave hundreds of MiB of it in old space for long after the load
 * stops: only a reading after a full GC is what is live.
 */
function collectGarbage(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error(`no answer to HeapProfiler.collectGarbage in ${settings.gcTimeoutMs} ms`));
    }, settings.gcTimeoutMs);
    ws.addEventListener('open', () => ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' })));
    ws.addEventListener('message', (ev) => {
      if ((JSON.parse(String(ev.data)) as { id?: number }).id !== 1) return;
      clearTimeout(timer);
      ws.close();
      resolve();
    });
    ws.addEventListener('error', () => {
      clearTimeout(timer);
      reject(new Error(`the server's inspector at ${url} failed`));
    });
  });
}

/** The server's memory with only what is live in its heap. */
async function liveReading(url: string, inspector: string): Promise<MemoryReading> {
  await collectGarbage(inspector);
  return readMemory(url);
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
  console.log(`\nper actor: (reading - before) / ${accounts}, each reading after a full GC; target ${settings.targetBytesPerActor} B (1M resident accounts in 2 GiB)`);
}

async function bench(session: Session, run: string, o: MemoryOptions): Promise<number> {
  const { target } = session;
  console.log(`geopay bench:memory: ${o.accounts} accounts, ${o.clients} clients, server ${target.url} (pid ${target.server?.pid})`);
  const inspector = inspectorUrl(target.server?.output() ?? '');
  const tenant = await createTenant(session.client, { adminKey: target.adminKey, run, liftRateLimits: true }, setupKeys(`${run}t`));
  const before = await liveReading(target.url, inspector);
  const opened = await openAccounts(session, tenant, run, o);
  console.log(`opened ${o.accounts} accounts in ${opened.seconds.toFixed(1)} s (${(o.accounts / opened.seconds).toFixed(0)} accounts/s)`);
  await waitResident(target.url, before.resident + o.accounts);
  const filled = await liveReading(target.url, inspector);
  await touchAccounts(session, tenant, opened.ids, o.clients);
  const touched = await liveReading(target.url, inspector);
  printFigures(o.accounts, before, [['after opening', filled], ['after one read each', touched]]);
  return 0;
}

runMain(() => withOptions(USAGE, () => parseOptions(process.argv.slice(2)), (o) => {
  const run = `mem${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  // Room above N, and idle far past the run: nothing may be passivated while we count.
  const serverEnv = {
    MAX_RESIDENT_ACTORS: String(o.accounts + 10_000), ACTOR_IDLE_MS: String(settings.actorIdleMs),
    NODE_OPTIONS: [process.env.NODE_OPTIONS, settings.inspectorOption].filter(Boolean).join(' '),
  };
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
