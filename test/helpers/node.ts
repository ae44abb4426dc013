// An in-process geopay node on a database of its own, plus the calls every test needs:
// a tenant with a key, accounts, deposits. Requests go through fastify's inject (no socket).
import { randomBytes } from 'node:crypto';
import type { Config } from '../../config/settings.ts';
import { loadConfig } from '../../config/settings.ts';
import { startNode } from '../../src/node.ts';
import type { GeopayNode } from '../../src/node.ts';
import type { CommitObserver } from '../../src/persistence/journal.ts';
import { createTestDatabase } from './db.ts';
import type { TestDatabase } from './db.ts';

export interface TestNode {
  node: GeopayNode;
  db: TestDatabase;
  adminKey: string;
  cfg: Config;
  call(method: string, url: string, opts?: { key?: string; body?: unknown; idem?: string; headers?: Record<string, string>; rawBody?: string }): Promise<{ status: number; body: any; headers: Record<string, unknown> }>;
  tenant(name?: string): Promise<{ id: string; key: string }>;
  account(key: string, currency?: string, extra?: Record<string, unknown>): Promise<string>;
  deposit(key: string, accountId: string, amount: string, currency?: string): Promise<{ status: number; body: any }>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

let seq = 0;
export const idem = (): string => `k-${Date.now()}-${++seq}-${randomBytes(4).toString('hex')}`;

export async function startTestNode(prefix: string, overrides: Partial<Config> = {}, onCommit?: CommitObserver, clock?: () => number): Promise<TestNode> {
  const db = await createTestDatabase(prefix);
  const adminKey = `gp_admin_${randomBytes(16).toString('hex')}`;
  // Rate limits out of the way unless a test sets them (test/rate-limit.test.ts does).
  const cfg = loadConfig({}, {
    databaseUrl: db.url, port: 0, logLevel: 'silent', adminApiKey: adminKey, pgPoolMax: 6,
    rateLimitReadsPerS: 1_000_000, rateLimitWritesPerS: 1_000_000, ...overrides,
  });
  const opts = { ...(onCommit ? { onCommit } : {}), ...(clock ? { clock } : {}) };
  let node = await startNode(cfg, opts);

  const t: TestNode = {
    get node() { return node; },
    db, adminKey, cfg,
    async call(method, url, opts = {}) {
      const headers: Record<string, string> = { ...(opts.headers ?? {}) };
      if (opts.key !== undefined) headers.authorization = `Bearer ${opts.key}`;
      if (opts.idem !== undefined) headers['idempotency-key'] = opts.idem;
      let payload: string | undefined;
      if (opts.rawBody !== undefined) payload = opts.rawBody;
      else if (opts.body !== undefined) payload = JSON.stringify(opts.body);
      if (payload !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
      const res = await node.app.inject({ method: method as 'GET', url, headers, ...(payload !== undefined ? { payload } : {}) });
      let body: unknown = res.body;
      try { body = JSON.parse(res.body); } catch { /* not JSON */ }
      return { status: res.statusCode, body, headers: res.headers as Record<string, unknown> };
    },
    async tenant(name = 'tenant') {
      const tr = await t.call('POST', '/v1/tenants', { key: adminKey, idem: idem(), body: { name } });
      if (tr.status !== 201) throw new Error(`tenant: ${tr.status} ${JSON.stringify(tr.body)}`);
      const kr = await t.call('POST', `/v1/tenants/${tr.body.id}/keys`, { key: adminKey, idem: idem() });
      if (kr.status !== 201) throw new Error(`key: ${kr.status} ${JSON.stringify(kr.body)}`);
      return { id: tr.body.id, key: kr.body.key };
    },
    async account(key, currency = 'USD', extra = {}) {
      const r = await t.call('POST', '/v1/accounts', { key, idem: idem(), body: { currency, ...extra } });
      if (r.status !== 201) throw new Error(`account: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.id;
    },
    async deposit(key, accountId, amount, currency = 'USD') {
      return t.call('POST', '/v1/deposits', { key, idem: idem(), body: { accountId, amount, currency } });
    },
    async restart() {
      await node.stop();
      node = await startNode(cfg, opts);
    },
    async close() {
      await node.stop().catch(() => undefined);
      await db.drop();
    },
  };
  return t;
}
