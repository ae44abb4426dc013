// The ops page in a real browser on a running cluster: 3 nodes in 2 regions as child processes
// (3 Redis masters, one PostgreSQL database), a steady load of transfers, and /ops opened in
// Debian's Chromium. The figures it shows must be those of the /v1/ops answer it rendered, the
// map must be GET /v1/cluster's, the rate must be the load's, nothing may fail on the console
// or the network; /v1/ops refuses other keys, and a frozen peer does not hold the page up.
import { mkdir } from 'node:fs/promises';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_PATH, launchBrowser, type Browser } from '../bench/lib/browser.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { clusterMap, startCluster, startRedisMasters, waitFor, type ClusterMap, type LocalCluster, type RedisMasters } from './helpers/cluster.ts';
import { requireChromium } from './helpers/prereq.ts';
import { api } from './helpers/server-process.ts';

requireChromium(CHROMIUM_PATH);

const regionSizes = { eu: 2, us: 1 };
const buckets = 8;
const accountsPerRegion = 10;
/** Closed-loop clients: enough for a rate well above the page's rounding, little for 2 cores. */
const loadWorkers = 4;
const screenshotPath = join(process.cwd(), 'reports', 'ops-page.png');

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
let db: TestDatabase | undefined;
let redis: RedisMasters | undefined;
let cluster: LocalCluster | undefined;
let agent: Agent | undefined;
let sql: pg.Pool | undefined;
let browser: Browser | undefined;
let tenantKey = '';
const accounts: string[] = [];
/** When each money movement the test made was acknowledged (deposits and transfers alike). */
const ackedAtMs: number[] = [];

const c = (): LocalCluster => cluster!;
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const client = (key: string, url = pick(c().live()).url) => api(url, key, { dispatcher: agent! });

/** A setup POST that must succeed, retried with its key while the cluster settles. */
async function mustPost(path: string, body: unknown, key = tenantKey): Promise<any> {
  const idem = randomUUID();
  return waitFor(`POST ${path} to succeed`, 30_000, async () => {
    const res = await client(key).post(path, body, idem).catch(() => undefined);
    if (res && (res.status === 201 || res.status === 202)) return res.body;
    if (res && ![503, 409].includes(res.status)) throw new Error(`POST ${path} answered ${res.status}: ${JSON.stringify(res.body)}`);
    return undefined;
  }, 100);
}

/** Every shard owned by a live node of its region, as the first node sees it. */
async function settledMap(): Promise<ClusterMap> {
  return waitFor('every shard owned by a live node of its region', 60_000, async () => {
    const m = await clusterMap(c().nodes[0]!.url, adminKey);
    const live = new Map(c().live().map((n) => [n.nodeId, n.region]));
    const settled = m && m.nodes.length === live.size && m.shards.length === buckets * c().regions.length
      && m.shards.every((s) => s.owner !== null && live.get(s.owner) === s.region);
    return settled ? m : undefined;
  }, 250);
}

/** Transfers between random accounts through random nodes until stopped. */
function startLoad(): { stop(): Promise<void> } {
  let stopped = false;
  const worker = async (): Promise<void> => {
    while (!stopped) {
      const source = pick(accounts);
      let destination = pick(accounts);
      while (destination === source) destination = pick(accounts);
      const res = await client(tenantKey).post('/v1/transfers', { sourceAccountId: source, destinationAccountId: destination, amount: '1', currency: 'USD' }).catch(() => undefined);
      if (res && (res.status === 201 || res.status === 202)) ackedAtMs.push(Date.now());
      else await sleep(50);
    }
  };
  const running = Array.from({ length: loadWorkers }, worker);
  return { stop: async () => { stopped = true; await Promise.all(running); } };
}

async function getOps(url: string, key: string | undefined): Promise<{ status: number; body: any; ms: number }> {
  const t0 = performance.now();
  const res = await request(`${url}/v1/ops`, { headers: key === undefined ? {} : { authorization: `Bearer ${key}` }, dispatcher: agent! });
  const text = await res.body.text();
  return { status: res.statusCode, body: text === '' ? undefined : JSON.parse(text), ms: performance.now() - t0 };
}

beforeAll(async () => {
  db = await createTestDatabase('ops_page');
  sql = new pg.Pool({ connectionString: db.url, max: 2 });
  agent = new Agent({ connections: 32, headersTimeout: 10_000, bodyTimeout: 10_000 });
  redis = await startRedisMasters(3);
  cluster = await startCluster({
    databaseUrl: db.url, adminKey, regions: regionSizes, redisUrls: redis.urls,
    env: { SHARD_BUCKETS: String(buckets), REGION_FAILOVER: 'deny', RELAY_INTERVAL_MS: '200', RELAY_MIN_AGE_MS: '500', LOG_LEVEL: 'warn' },
  });
  await settledMap();
  const tenant = await mustPost('/v1/tenants', { name: 'ops-page' }, adminKey);
  tenantKey = (await mustPost(`/v1/tenants/${tenant.id}/keys`, undefined, adminKey)).key;
  for (const region of Object.keys(regionSizes)) {
    const opened = await Promise.all(Array.from({ length: accountsPerRegion }, () => mustPost('/v1/accounts', { currency: 'USD', region })));
    accounts.push(...opened.map((a) => a.id as string));
  }
  await Promise.all(accounts.map(async (accountId) => {
    await mustPost('/v1/deposits', { accountId, amount: '1000000', currency: 'USD' });
    ackedAtMs.push(Date.now());
  }));
  browser = await launchBrowser();
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await cluster?.stopAll();
  await redis?.stopAll();
  await agent?.destroy();
  await sql?.end();
  await db?.drop();
}, 60_000);

/** What the page shows, read from its data-testid elements (raw values from data-value). */
interface Shown {
  at: string;
  polls: number;
  regions: { region: string; nodes: number; shards: number }[];
  nodes: { nodeId: string; region: string; reachable: string; tps: string; p99: string; shards: string[] }[];
  totalTps: string; totalP99: string; inFlight: string; backlog: string; servedBy: string;
  hot: string[];
}

function readPage(): Shown {
  const value = (root: ParentNode, id: string): string => root.querySelector(`[data-testid="${id}"]`)?.getAttribute('data-value') ?? '';
  return {
    at: document.body.dataset.at ?? '',
    polls: Number(document.body.dataset.polls ?? 0),
    regions: [...document.querySelectorAll('[data-testid="region"]')].map((r) => ({
      region: r.getAttribute('data-region') ?? '', nodes: Number(value(r, 'region-nodes')), shards: Number(value(r, 'region-shards')),
    })),
    nodes: [...document.querySelectorAll('[data-testid="node"]')].map((n) => ({
      nodeId: n.getAttribute('data-node-id') ?? '', region: n.closest('[data-testid="region"]')?.getAttribute('data-region') ?? '',
      reachable: n.getAttribute('data-reachable') ?? '', tps: value(n, 'node-tps'), p99: value(n, 'node-p99'),
      shards: [...n.querySelectorAll('[data-testid="shard"]')].map((s) => s.getAttribute('data-shard') ?? ''),
    })),
    totalTps: value(document, 'total-tps'), totalP99: value(document, 'total-p99'), inFlight: value(document, 'in-flight-count'),
    backlog: document.querySelector('[data-testid="webhook-backlog"]')?.textContent ?? '', servedBy: value(document, 'served-by'),
    hot: [...document.querySelectorAll('[data-testid="hot-account"] td:first-child')].map((td) => td.textContent ?? ''),
  };
}

const countBy = <T>(xs: readonly T[], key: (x: T) => string): Record<string, number> =>
  xs.reduce<Record<string, number>>((acc, x) => ({ ...acc, [key(x)]: (acc[key(x)] ?? 0) + 1 }), {});

describe.sequential('ops page', () => {
  it('shows the cluster map of /v1/cluster, the /v1/ops figures it polled and the load\'s rate, with no console error or failed request', async () => {
    const serving = c().node('eu-1');
    const page = await browser!.context.newPage();
    const problems: string[] = [];
    const polled = new Map<string, any>();
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`);
      if (new URL(r.url()).pathname === '/v1/ops' && r.status() === 200) void r.json().then((doc: any) => polled.set(doc.at, doc));
    });

    const load = startLoad();
    const loadStartedAt = Date.now();
    try {
      const res = await page.goto(`${serving.url}/ops`);
      expect(res?.status()).toBe(200);
      expect(res?.headers()['content-security-policy']).toMatch(/default-src 'none'; script-src 'self'/);
      await page.getByTestId('admin-key').fill(adminKey);
      await page.getByTestId('connect').click();
      await page.waitForFunction(() => Number(document.body.dataset.polls ?? 0) >= 1, undefined, { timeout: 15_000 });
      // A full window of load behind the figures, then the next poll after it.
      await sleep(Math.max(0, loadStartedAt + 12_000 - Date.now()));
      const polls = await page.evaluate(() => Number(document.body.dataset.polls));
      await page.waitForFunction((n) => Number(document.body.dataset.polls) > n, polls, { timeout: 10_000 });
      const shown = await page.evaluate(readPage);
      const map = await settledMap();
      await page.screenshot({ path: await screenshotFile(), fullPage: true });
      console.log(`ops page screenshot: ${screenshotPath}`);

      // The figures are those of the answer the page rendered (same poll).
      const doc = await waitFor(`the /v1/ops answer of ${shown.at}`, 5_000, () => polled.get(shown.at));
      expectShownIsDocument(shown, doc);
      // The map is the cluster's: nodes and shards per region, node ids, as GET /v1/cluster has them.
      expect(shown.servedBy).toBe('eu-1');
      expect(shown.regions.map((r) => [r.region, r.nodes, r.shards])).toEqual(
        [...new Set([...map.nodes.map((n) => n.region), ...map.shards.map((s) => s.region)])].sort()
          .map((region) => [region, countBy(map.nodes, (n) => n.region)[region] ?? 0, countBy(map.shards, (s) => s.region)[region] ?? 0]));
      expect(shown.nodes.map((n) => n.nodeId).sort()).toEqual(map.nodes.map((n) => n.nodeId).sort());
      expect(shown.nodes.map((n) => n.nodeId).sort()).toEqual(c().live().map((n) => n.nodeId).sort());
      for (const n of shown.nodes) expect(n.shards.sort(), n.nodeId).toEqual(map.shards.filter((s) => s.owner === n.nodeId).map((s) => s.id).sort());
      expectRateOfLoad(shown, doc);
      for (const id of shown.hot) expect(accounts, `hot account ${id}`).toContain(id);
      expect(shown.backlog).toBe(String(doc.webhookBacklog));
    } finally {
      await load.stop();
    }

    // At rest, the page and the API agree on the transfers in flight, and so does the database.
    const api0 = await waitFor('nothing in flight per /v1/ops', 20_000, async () => {
      const r = await getOps(serving.url, adminKey);
      return r.body.inFlight.count === 0 ? r.body : undefined;
    }, 500);
    const { rows } = await sql!.query<{ n: string }>(`SELECT count(*) AS n FROM transfers WHERE state IN ('debited', 'refused')`);
    expect(Number(rows[0]!.n)).toBe(api0.inFlight.count);
    await page.waitForFunction(() => document.querySelector('[data-testid="in-flight-count"]')?.getAttribute('data-value') === '0', undefined, { timeout: 10_000 });
    expect(problems).toEqual([]);
    await page.close();
  }, 120_000);

  it('answers /v1/ops to the admin key only, a summary to a signed peer only; serves /ops itself without a key', async () => {
    const url = c().node('eu-1').url;
    expect((await getOps(url, undefined)).status).toBe(401);
    expect((await getOps(url, 'gp_not_a_key')).status).toBe(401);
    const tenant = await getOps(url, tenantKey);
    expect(tenant.status).toBe(403);
    expect(JSON.stringify(tenant.body)).not.toContain('acc_');
    const admin = await getOps(url, adminKey);
    expect(admin.status).toBe(200);
    // A node's own summary (hot account ids included) is for signed peers only.
    const internalUrl = (await settledMap()).nodes.find((n) => n.nodeId === 'eu-2')!.url;
    const unsigned = await request(`${internalUrl}/internal/v1/ops/summary`, { dispatcher: agent! });
    expect(unsigned.statusCode).toBe(401);
    expect(await unsigned.body.text()).not.toContain('acc_');
    const pageRes = await request(`${url}/ops`, { dispatcher: agent! });
    expect(pageRes.statusCode).toBe(200);
    expect(String(pageRes.headers['content-type'])).toMatch(/^text\/html/);
    expect(await pageRes.body.text()).not.toMatch(/https?:\/\//);
  });

  it('shows a frozen peer as unreachable and answers within about a second', async () => {
    const peer = c().node('eu-2');
    peer.sigstop();
    try {
      // Membership drops it after 3 missed heartbeats; the page asks it before that.
      const r = await getOps(c().node('eu-1').url, adminKey);
      expect(r.status).toBe(200);
      const nodes = r.body.regions.flatMap((g: any) => g.nodes);
      expect(nodes.find((n: any) => n.nodeId === 'eu-2')).toMatchObject({ reachable: false, error: 'timeout', transfersPerS: null });
      expect(nodes.filter((n: any) => n.nodeId !== 'eu-2').every((n: any) => n.reachable)).toBe(true);
      expect(r.body.totals.unreachable).toBe(1);
      expect(r.ms).toBeLessThan(2_500);
    } finally {
      peer.sigcont();
    }
  }, 30_000);
});

async function screenshotFile(): Promise<string> {
  await mkdir(join(process.cwd(), 'reports'), { recursive: true });
  return screenshotPath;
}

function expectShownIsDocument(shown: Shown, doc: any): void {
  const docNodes = doc.regions.flatMap((r: any) => r.nodes.map((n: any) => ({ ...n, region: r.region })));
  expect(shown.regions).toEqual(doc.regions.map((r: any) => ({ region: r.region, nodes: r.nodes.length, shards: r.shards })));
  expect(shown.nodes.map((n) => [n.nodeId, n.region, n.reachable, n.tps, n.p99])).toEqual(
    docNodes.map((n: any) => [n.nodeId, n.region, String(n.reachable), String(n.transfersPerS ?? ''), String(n.p99Ms ?? '')]));
  expect(shown.totalTps).toBe(String(doc.totals.transfersPerS));
  expect(shown.totalP99).toBe(String(doc.totals.p99Ms));
  expect(shown.inFlight).toBe(String(doc.inFlight.count));
  expect(shown.hot).toEqual(doc.hotAccounts.map((h: any) => h.accountId));
  expect(typeof doc.webhookBacklog).toBe('number');
}

/** Transfers/s is what the clients were acknowledged over the window, within the sampling's slack; p99 a plausible figure. */
function expectRateOfLoad(shown: Shown, doc: any): void {
  const total = Number(shown.totalTps);
  const nodeRates = shown.nodes.map((n) => Number(n.tps));
  expect(total).toBeGreaterThan(0);
  expect(Math.abs(total - nodeRates.reduce((a, b) => a + b, 0))).toBeLessThan(0.05);
  const endMs = Date.parse(doc.at);
  const windowMs = doc.windowS * 1_000;
  const acked = ackedAtMs.filter((t) => t > endMs - windowMs && t <= endMs).length;
  const clientRate = acked / doc.windowS;
  // The nodes' windows end at their last sample (up to 1 s before `at`), a second's worth either way.
  expect(Math.abs(total - clientRate), `page ${total}/s, clients ${clientRate}/s`).toBeLessThanOrEqual(0.25 * clientRate + 2);
  const p99 = Number(shown.totalP99);
  expect(p99).toBeGreaterThan(0);
  expect(p99).toBeLessThan(10_000);
}
