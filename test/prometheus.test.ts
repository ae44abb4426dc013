// A real Prometheus (scripts/prometheus.ts) scraping a small local cluster (eu and us, one node
// each, 3 Redis masters) while transfers go through the public API of both nodes: every node is
// an "up" target of job geopay, the transfer counters Prometheus collected add up to what the
// clients were acknowledged, and the alert rules of ops/prometheus/alerts.yml are loaded and
// evaluate without error against the live series.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoadClient } from '../bench/lib/client.ts';
import { observedJobs, runPhase } from '../bench/lib/drivers.ts';
import { anyTwo, transferJobs } from '../bench/lib/phases.ts';
import { setup, type SetupResult } from '../bench/lib/setup.ts';
import { startLocalCluster, type RunningCluster } from '../scripts/cluster.ts';
import { alertRulesPath, startPrometheus, type RunningPrometheus } from '../scripts/prometheus.ts';
import { waitFor } from './helpers/cluster.ts';

const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
const run = `prometheus-${randomBytes(4).toString('hex')}`;
const accounts = 20;
const loadSeconds = 4;
const loadClients = 8;
/** With a 1 s scrape interval, a new series or sample shows within a few seconds. */
const scrapeWaitMs = 20_000;
/** The committed rules file; another change may not have added it yet, and then only its check is skipped. */
const rulesFile = existsSync(alertRulesPath) ? alertRulesPath : undefined;

let cluster: RunningCluster | undefined;
let prometheus: RunningPrometheus | undefined;
let clients: LoadClient[] = [];
let funded: SetupResult | undefined;

beforeAll(async () => {
  cluster = await startLocalCluster({
    regions: { eu: 1, us: 1 },
    masters: 3,
    databaseUrl: '',
    adminKey,
    env: { SHARD_BUCKETS: '8', LOG_LEVEL: 'warn' },
  });
  prometheus = await startPrometheus({ targets: cluster.cluster.nodes.map((n) => n.url), rulesFile, scrapeIntervalS: 1 });
  clients = cluster.cluster.nodes.map((n) => new LoadClient({ url: n.url, connections: loadClients, timeoutMs: 10_000, retries: 10, log: undefined, run, engine: 'geopay' }));
  funded = await setup(clients[0]!, {
    adminKey, run, liftRateLimits: false, concurrency: 8,
    spec: { accounts, currencies: ['USD'], fundingMinor: 1_000_000n, overdraftMinor: 0n },
  });
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.destroy()));
  // Each stops exactly the processes it started (Prometheus's pid; the nodes, then the Redis masters).
  await prometheus?.stop();
  await cluster?.shutdown();
}, 60_000);

interface Vector {
  resultType: string;
  result: { metric: Record<string, string>; value: [number, string] }[];
}

/** GET on Prometheus's HTTP API; its `data` when it answers status "success". */
async function promApi<T>(path: string): Promise<T> {
  const res = await fetch(`${prometheus!.url}${path}`, { signal: AbortSignal.timeout(5_000) });
  const body = (await res.json()) as { status: string; data: T };
  if (res.status !== 200 || body.status !== 'success') throw new Error(`GET ${path}: ${res.status} ${JSON.stringify(body)}`);
  return body.data;
}

const query = (expr: string): Promise<Vector> => promApi<Vector>(`/api/v1/query?query=${encodeURIComponent(expr)}`);

/** The value of a one-element vector; undefined while the expression yields no series. */
async function scalar(expr: string): Promise<number | undefined> {
  const v = await query(expr);
  return v.result[0] === undefined ? undefined : Number(v.result[0].value[1]);
}

/** Transfers between any two of the funded accounts, alternating between the nodes; counts the acknowledged ones. */
async function transferLoad(s: SetupResult): Promise<{ acked: number; refused: number; unanswered: number }> {
  const next = transferJobs({
    clients, tenantId: s.tenantId, tenantKey: s.tenantKey, currency: 'USD', maxAmountMinor: 100,
    pickPair: anyTwo(s.accounts.byCurrency.get('USD')!),
  });
  let acked = 0;
  let refused = 0;
  let unanswered = 0;
  // Every answer, the ones after the measured window included: the nodes count those too.
  const counted = observedJobs(next, (outcome) => {
    if (outcome.kind === 'ok') acked++;
    if (outcome.kind === 'rejected') refused++;
    if (outcome.kind === 'error') unanswered++;
  });
  await runPhase({ name: 'prometheus', load: { mode: 'closed', concurrency: loadClients }, durationS: loadSeconds, warmupS: 0, maxInFlight: loadClients, next: counted });
  return { acked, refused, unanswered };
}

describe('Prometheus scraping the local cluster', () => {
  it('has every node as an up target of job geopay, with its node and region labels', async () => {
    const nodes = cluster!.cluster.nodes;
    type Target = { scrapeUrl: string; health: string; lastError: string; labels: Record<string, string> };
    let last: Target[] = [];
    await waitFor('every node up in /api/v1/targets', scrapeWaitMs, async () => {
      last = (await promApi<{ activeTargets: Target[] }>('/api/v1/targets?state=active')).activeTargets;
      return last.length === nodes.length && last.every((t) => t.health === 'up') ? true : undefined;
    }, 250).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; targets: ${JSON.stringify(last)}`);
    });
    expect(last.map((t) => t.scrapeUrl).sort()).toEqual(nodes.map((n) => `${n.url}/metrics`).sort());
    expect(last.every((t) => t.labels.job === 'geopay')).toBe(true);
    expect(await scalar('count(up{job="geopay"} == 1)')).toBe(nodes.length);
    // The nodes' own default labels survive the scrape: one series set per node, named as the cluster names it.
    const seen = (await query('group by (node, region) (geopay_shards_owned{job="geopay"})')).result.map((r) => `${r.metric.region}/${r.metric.node}`);
    expect(seen.sort()).toEqual(nodes.map((n) => `${n.region}/${n.nodeId}`).sort());
  });

  it('collects the transfers of a short load: a rate above zero, and totals equal to what was acknowledged', async () => {
    const { acked, refused, unanswered } = await transferLoad(funded!);
    expect(acked, 'transfers acknowledged during the load').toBeGreaterThan(0);

    const rate = await waitFor('a transfer rate above zero', scrapeWaitMs, async () => {
      const v = await scalar('sum(rate(geopay_transfers_total{job="geopay", kind="transfer"}[15s]))');
      return v !== undefined && v > 0 ? v : undefined;
    }, 250);
    expect(rate).toBeGreaterThan(0);

    // Every transfer answered is counted once, a refusal (422) included; one whose client gave up
    // may or may not have been answered: those are the only slack.
    let total: number | undefined;
    await waitFor(`the scraped transfer total to reach ${acked}`, scrapeWaitMs, async () => {
      total = await scalar('sum(geopay_transfers_total{job="geopay", kind="transfer"})');
      return total !== undefined && total >= acked ? true : undefined;
    }, 250).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; last total ${String(total)}`);
    });
    expect(total).toBeLessThanOrEqual(acked + refused + unanswered);
    // Setup funded each account once; its retries, if any, were replays and count nothing.
    expect(await scalar('sum(geopay_transfers_total{job="geopay", kind="deposit"})')).toBe(accounts);
  });

  it.runIf(rulesFile !== undefined)('loads the alert rules of ops/prometheus/alerts.yml, and they evaluate without error', async () => {
    const text = readFileSync(rulesFile!, 'utf8');
    const groupsInFile = [...text.matchAll(/^\s*- name:\s*(\S+)/gm)].map((m) => m[1]!);
    const alertsInFile = [...text.matchAll(/^\s*- alert:\s*(\S+)/gm)].map((m) => m[1]!);
    expect(groupsInFile.length).toBeGreaterThan(0);
    expect(alertsInFile.length).toBeGreaterThan(0);

    type Rule = { name: string; type: string; health: string; lastError?: string };
    type Group = { name: string; file: string; rules: Rule[] };
    // Health is "unknown" until a rule's first evaluation (every second here).
    const groups = await waitFor('every rule evaluated once', scrapeWaitMs, async () => {
      const g = (await promApi<{ groups: Group[] }>('/api/v1/rules')).groups;
      return g.length > 0 && g.every((x) => x.rules.every((r) => r.health !== 'unknown')) ? g : undefined;
    }, 250);
    expect(groups.map((g) => g.name).sort()).toEqual([...groupsInFile].sort());
    expect(groups.every((g) => g.file === rulesFile)).toBe(true);
    const alerting = groups.flatMap((g) => g.rules.filter((r) => r.type === 'alerting'));
    expect(alerting.map((r) => r.name).sort()).toEqual([...alertsInFile].sort());
    const failing = alerting.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.health} ${r.lastError ?? ''}`);
    expect(failing).toEqual([]);
  });
});
