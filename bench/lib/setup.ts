// Setup before any measurement: a tenant and its key, the customer accounts (currencies
// round-robin), one merchant account per currency, and a deposit funding each customer. All
// through the public API and the request log, so the funding deposits are checked too. The
// pieces (mustPost, createTenant, inParallel) serve benches that lay out accounts their own way.
import type { LoadClient } from './client.ts';
import type { WorkloadSpec } from './options.ts';
import type { AccountSet } from './workload.ts';

/** With backoff capped at 2 s, about a minute of patience per setup request. */
const SETUP_RETRIES = 30;

export interface SetupResult {
  tenantId: string;
  tenantKey: string;
  accounts: AccountSet;
  seconds: number;
}

/** Runs `fn` over `items` with at most `limit` in flight; the first failure aborts the rest. */
export async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export interface SetupPost {
  op: string;
  path: string;
  body: unknown;
  key: string;
  bearer: string;
  /** The tenant the key acts for ('admin' for admin calls), for the request log. */
  tenant: string;
}

/** A setup POST that must answer one of `want`; its parsed answer. */
export async function mustPost(client: LoadClient, req: SetupPost, want: number[]): Promise<any> {
  // Setup has no latency to protect and must not fail on a passing overload (a small
  // MAILBOX_LIMIT, the one external account taking every funding deposit): retry longer.
  const r = await client.post({ ...req, phase: 'setup' }, undefined, SETUP_RETRIES);
  if (r.status === null || !want.includes(r.status)) {
    throw new Error(`setup: POST ${req.path} answered ${r.status ?? r.outcome.kind} ${JSON.stringify(r.answer)} after ${r.attempts} attempt(s)`);
  }
  return r.answer;
}

/** Keys `<run>-setup-<what>-<n>`: unique within the run, and readable in the request log. */
export function setupKeys(run: string): (what: string) => string {
  let n = 0;
  return (what) => `${run}-setup-${what}-${n++}`;
}

export interface TenantOptions {
  adminKey: string;
  run: string;
  /** Raise the tenant's rate limits out of the way (PUT /v1/tenants/:id/limits). */
  liftRateLimits: boolean;
  onProgress?: (what: string) => void;
}

/** The run's own tenant and its API key. */
export async function createTenant(
  client: LoadClient, opts: TenantOptions, key: (what: string) => string,
): Promise<{ tenantId: string; tenantKey: string }> {
  const admin = { bearer: opts.adminKey, tenant: 'admin' };
  const tenant = await mustPost(client, { op: 'tenant', path: '/v1/tenants', body: { name: `loadtest ${opts.run}` }, key: key('tenant'), ...admin }, [201]);
  const tenantId = String(tenant.id);
  const keyRow = await mustPost(client, { op: 'key', path: `/v1/tenants/${tenantId}/keys`, body: undefined, key: key('key'), ...admin }, [201]);
  if (opts.liftRateLimits) {
    // The tenant is the load test's own: a per-tenant rate limit (100/s by default on
    // geopay) would measure the limiter, not the payments. An engine without the endpoint
    // (404) has no limits to lift.
    const r = await client.put(`/v1/tenants/${tenantId}/limits`, { readsPerS: 1_000_000, writesPerS: 1_000_000 }, opts.adminKey);
    if (r.status !== 200 && r.status !== 404) throw new Error(`setup: PUT /v1/tenants/${tenantId}/limits answered ${r.status ?? r.error} ${JSON.stringify(r.answer)}`);
    opts.onProgress?.(r.status === 200 ? 'tenant rate limits lifted to 1000000/s' : 'no rate-limit endpoint (404): nothing to lift');
  }
  return { tenantId, tenantKey: String(keyRow.key) };
}

/** What setup reads of a workload: how many accounts, in which currencies, funded how. */
export type AccountsSpec = Pick<WorkloadSpec, 'accounts' | 'currencies' | 'fundingMinor' | 'overdraftMinor'>;

export async function setup(
  client: LoadClient,
  opts: TenantOptions & { spec: AccountsSpec; concurrency: number; regions?: readonly string[] },
): Promise<SetupResult> {
  const t0 = performance.now();
  const { spec } = opts;
  const key = setupKeys(opts.run);
  const { tenantId, tenantKey } = await createTenant(client, opts, key);
  const must = (op: string, path: string, body: unknown, want: number[]): Promise<any> =>
    mustPost(client, { op, path, body, key: key(op), bearer: tenantKey, tenant: tenantId }, want);

  const overdraft = spec.overdraftMinor > 0n ? { overdraftLimit: spec.overdraftMinor.toString() } : {};
  const currencies = Array.from({ length: spec.accounts }, (_, i) => spec.currencies[i % spec.currencies.length]!);
  opts.onProgress?.(`opening ${spec.accounts} accounts`);
  // Across a cluster's regions in turn, so its traffic crosses them; else in the node's own.
  const regionOf = (i: number): { region?: string } => (opts.regions?.length ? { region: opts.regions[i % opts.regions.length]! } : {});
  const opened = await inParallel(currencies.map((currency, i) => ({ currency, ...regionOf(i) })), opts.concurrency, async (body) =>
    String((await must('open', '/v1/accounts', { ...body, ...overdraft }, [201])).id));
  const merchants = new Map<string, string>();
  for (const currency of spec.currencies) {
    merchants.set(currency, String((await must('open', '/v1/accounts', { currency, metadata: { role: 'merchant' } }, [201])).id));
  }
  const byCurrency = new Map<string, string[]>(spec.currencies.map((c) => [c, []]));
  opened.forEach((id, i) => byCurrency.get(currencies[i]!)!.push(id));

  if (spec.fundingMinor > 0n) {
    opts.onProgress?.(`funding ${spec.accounts} accounts`);
    await inParallel(opened, opts.concurrency, (accountId, i) =>
      must('deposit', '/v1/deposits', { accountId, amount: spec.fundingMinor.toString(), currency: currencies[i]! }, [201, 202]));
  }
  return { tenantId, tenantKey, accounts: { byCurrency, merchants }, seconds: (performance.now() - t0) / 1000 };
}
