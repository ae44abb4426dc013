// The webhook endpoints API on a real node and PostgreSQL: create with the secret shown once
// (a replay answers without it), list, read, delete, rotate with an overlap, tenant scoping,
// the address guard; and deliveries made by the node's own dispatcher to a receiver here,
// verified with the `standardwebhooks` package (an implementation independent of ours).
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

interface Received { headers: IncomingHttpHeaders; body: string; at: number }

let t: TestNode;
let tenant: { id: string; key: string };
let receiver: Server;
let base = '';
/** What each path of the receiver got, and what it answers next (200 once its script is empty). */
const received = new Map<string, Received[]>();
const scripts = new Map<string, number[]>();

beforeAll(async () => {
  t = await startTestNode('webhook_endpoints', { webhookAllowPrivate: 'true', webhookPollMs: 50, webhookRetryBaseMs: 100 });
  tenant = await t.tenant('hooks');
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      const path = req.url ?? '/';
      received.set(path, [...(received.get(path) ?? []), { headers: req.headers, body, at: Date.now() }]);
      // A script answers only the deliveries of transfers (the deposit that funds the payer settles first).
      const kind = (JSON.parse(body || '{}') as { data?: { object?: { kind?: string } } }).data?.object?.kind;
      const status = kind === 'transfer' ? scripts.get(path)?.shift() ?? 200 : 200;
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await t?.close();
  await new Promise((r) => receiver?.close(r));
});

const receiverUrl = (): string => `${base}/hook`;

/** Resolves with what `path` received once `ok` holds of it (polled, bounded). */
async function receivedAt(path: string, ok: (r: Received[]) => boolean, ms = 20_000): Promise<Received[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = received.get(path) ?? [];
    if (ok(r)) return r;
    if (Date.now() > deadline) throw new Error(`${path}: ${r.length} deliveries after ${ms} ms`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/**
 * A funded account pays another of the tenant's: one transfer.settled event, on the payee.
 * `script`: what the receiver at that path answers the deliveries of transfers, in order.
 */
async function settledTransfer(script?: { path: string; statuses: number[] }): Promise<string> {
  const a = await t.account(tenant.key);
  const b = await t.account(tenant.key);
  await t.deposit(tenant.key, a, '100');
  if (script) scripts.set(script.path, script.statuses);
  const r = await t.call('POST', '/v1/transfers', { key: tenant.key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: b, amount: '7', currency: 'USD' } });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id as string;
}

const deliveredIds = (rs: Received[], transferId: string): Received[] =>
  rs.filter((r) => (JSON.parse(r.body) as { data: { object: { id?: string } } }).data.object.id === transferId);

const create = (body: unknown, key = tenant.key, k = idem()) => t.call('POST', '/v1/webhook-endpoints', { key, idem: k, body });

describe('webhook endpoints', () => {
  it('shows the secret once: the create answers it, a replay and every read do not', async () => {
    const k = idem();
    const first = await create({ url: receiverUrl(), eventTypes: ['transfer.settled'] }, tenant.key, k);
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    expect(first.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(first.body).toMatchObject({ url: receiverUrl(), eventTypes: ['transfer.settled'], disabledAt: null });
    const replay = await create({ url: receiverUrl(), eventTypes: ['transfer.settled'] }, tenant.key, k);
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.id).toBe(first.body.id);
    expect(replay.body.secret).toBeUndefined();
    const other = await create({ url: `${receiverUrl()}/other` }, tenant.key, k);
    expect(other.status).toBe(422);
    const read = await t.call('GET', `/v1/webhook-endpoints/${first.body.id}`, { key: tenant.key });
    expect(read.status).toBe(200);
    expect(read.body.secret).toBeUndefined();
    const list = await t.call('GET', '/v1/webhook-endpoints', { key: tenant.key });
    expect(list.body.data.map((e: { id: string }) => e.id)).toContain(first.body.id);
  });

  it('is the tenant\'s own: another tenant reads, deletes and rotates nothing of it', async () => {
    const mine = await create({ url: receiverUrl() });
    const other = await t.tenant('other');
    expect((await t.call('GET', `/v1/webhook-endpoints/${mine.body.id}`, { key: other.key })).status).toBe(404);
    expect((await t.call('DELETE', `/v1/webhook-endpoints/${mine.body.id}`, { key: other.key })).status).toBe(404);
    expect((await t.call('POST', `/v1/webhook-endpoints/${mine.body.id}/rotate-secret`, { key: other.key, idem: idem() })).status).toBe(404);
    expect((await t.call('GET', '/v1/webhook-endpoints', { key: other.key })).body.data).toEqual([]);
    expect((await t.call('DELETE', `/v1/webhook-endpoints/${mine.body.id}`, { key: tenant.key })).status).toBe(204);
    expect((await t.call('GET', `/v1/webhook-endpoints/${mine.body.id}`, { key: tenant.key })).status).toBe(404);
  });

  it('rotates the secret: a new one shown once, the previous one valid until the overlap ends', async () => {
    const e = await create({ url: receiverUrl() });
    const k = idem();
    const rotated = await t.call('POST', `/v1/webhook-endpoints/${e.body.id}/rotate-secret`, { key: tenant.key, idem: k });
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(200);
    expect(rotated.body.secret).toMatch(/^whsec_/);
    expect(rotated.body.secret).not.toBe(e.body.secret);
    expect(Date.parse(rotated.body.previousSecretExpiresAt)).toBeGreaterThan(Date.now());
    const replay = await t.call('POST', `/v1/webhook-endpoints/${e.body.id}/rotate-secret`, { key: tenant.key, idem: k });
    expect(replay.status).toBe(200);
    expect(replay.body.secret).toBeUndefined();
  });

  it('delivers a settled transfer, signed: the standardwebhooks package verifies it', async () => {
    const e = await create({ url: `${base}/signed`, eventTypes: ['transfer.settled'] });
    const id = await settledTransfer();
    const [got] = deliveredIds(await receivedAt('/signed', (rs) => deliveredIds(rs, id).length > 0), id);
    const payload = new Webhook(e.body.secret as string).verify(got!.body, got!.headers as Record<string, string>) as { type: string; data: { object: { id: string; state: string }; seq: number } };
    expect(payload.type).toBe('transfer.settled');
    expect(payload.data.object).toMatchObject({ id, state: 'settled' });
    expect(got!.headers['webhook-id']).toMatch(/^msg_/);
    // Signed with another secret, it does not verify.
    expect(() => new Webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw').verify(got!.body, got!.headers as Record<string, string>)).toThrow();
  });

  it('retries a failing receiver under one webhook-id until it answers 200, each attempt listed', async () => {
    const e = await create({ url: `${base}/flaky`, eventTypes: ['transfer.settled'] });
    const id = await settledTransfer({ path: '/flaky', statuses: [500, 503, 502] });
    const got = deliveredIds(await receivedAt('/flaky', (rs) => deliveredIds(rs, id).length >= 4), id);
    expect(got).toHaveLength(4);
    expect(new Set(got.map((g) => g.headers['webhook-id'])).size).toBe(1);
    for (const g of got) expect(() => new Webhook(e.body.secret as string).verify(g.body, g.headers as Record<string, string>)).not.toThrow();
    // The receiver has answered the 4th attempt; the dispatcher records it a moment later.
    let mine: { deliveryId: string; attempt: number; status: number }[] = [];
    for (let i = 0; i < 100 && mine.length < 4; i++) {
      const attempts = await t.call('GET', `/v1/webhook-endpoints/${e.body.id}/deliveries`, { key: tenant.key });
      mine = (attempts.body.data as typeof mine).filter((a) => a.deliveryId === got[0]!.headers['webhook-id']);
      if (mine.length < 4) await new Promise((r) => setTimeout(r, 50));
    }
    expect(mine.map((a) => [a.attempt, a.status]).sort((x, y) => x[0]! - y[0]!)).toEqual([[1, 500], [2, 503], [3, 502], [4, 200]]);
    const metrics = String((await t.node.app.inject({ method: 'GET', url: '/metrics' })).body);
    const count = (outcome: string): number => Number(new RegExp(`^geopay_webhook_attempts_total\\{outcome="${outcome}"[^}]*\\} (\\d+)`, 'm').exec(metrics)?.[1] ?? 0);
    expect(count('failed')).toBeGreaterThanOrEqual(3);
    expect(count('delivered')).toBeGreaterThanOrEqual(1);
    // Resent by hand: the same webhook-id again.
    const again = await t.call('POST', `/v1/webhook-endpoints/${e.body.id}/deliveries/${got[0]!.headers['webhook-id']}/redeliver`, { key: tenant.key, idem: idem() });
    expect(again.status, JSON.stringify(again.body)).toBe(202);
    const after = deliveredIds(await receivedAt('/flaky', (rs) => deliveredIds(rs, id).length >= 5), id);
    expect(after[4]!.headers['webhook-id']).toBe(got[0]!.headers['webhook-id']);
  });

  it('disables an endpoint that answers 410', async () => {
    const e = await create({ url: `${base}/gone`, eventTypes: ['transfer.settled'] });
    await settledTransfer({ path: '/gone', statuses: [410] });
    await receivedAt('/gone', (rs) => rs.length >= 1);
    for (let i = 0; i < 100; i++) {
      const read = await t.call('GET', `/v1/webhook-endpoints/${e.body.id}`, { key: tenant.key });
      if (read.body.disabledAt !== null) {
        expect(read.body.disabledReason).toMatch(/410/);
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('not disabled after a 410');
  });

  it('signs with both secrets while a rotation overlaps: each verifies', async () => {
    const e = await create({ url: `${base}/rotated`, eventTypes: ['transfer.settled'] });
    const rotated = await t.call('POST', `/v1/webhook-endpoints/${e.body.id}/rotate-secret`, { key: tenant.key, idem: idem() });
    const id = await settledTransfer();
    const [got] = deliveredIds(await receivedAt('/rotated', (rs) => deliveredIds(rs, id).length > 0), id);
    expect(String(got!.headers['webhook-signature']).split(' ')).toHaveLength(2);
    for (const secret of [e.body.secret, rotated.body.secret] as string[]) {
      expect(() => new Webhook(secret).verify(got!.body, got!.headers as Record<string, string>)).not.toThrow();
    }
  });

  it('refuses a URL that is not http(s)', async () => {
    const r = await create({ url: 'ftp://example.com/hook' });
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('invalid_webhook_url');
  });
});

describe('webhook endpoints without WEBHOOK_ALLOW_PRIVATE', () => {
  it('refuses loopback, private and plain-http URLs', async () => {
    const strict = await startTestNode('webhook_strict');
    try {
      const tn = await strict.tenant('strict');
      for (const url of ['https://127.0.0.1/hook', 'https://10.1.2.3/x', 'https://[::1]/x', 'https://169.254.169.254/latest', 'http://example.com/hook']) {
        const r = await strict.call('POST', '/v1/webhook-endpoints', { key: tn.key, idem: idem(), body: { url } });
        expect(r.status, url).toBe(400);
        expect(r.body.code, url).toBe('invalid_webhook_url');
      }
    } finally {
      await strict.close();
    }
  });
});
