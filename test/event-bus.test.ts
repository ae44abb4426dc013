// The ledger events on the bus, against a nats-server of this file's own and a real node: every
// event of the tenant's accounts reaches `geopay.events.<tenant>.<account>` with its id as
// Nats-Msg-Id, in each account's order; payments go on while the bus is killed, and once it
// is back every event committed meanwhile is published, none skipped.
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus } from '../src/bus/index.ts';
import type { Bus, ConsumerRunner } from '../src/bus/index.ts';
import { EVENTS_STREAM } from '../src/payments/event-bus.ts';
import { startNatsServers } from './helpers/nats.ts';
import type { NatsServers } from './helpers/nats.ts';
import type { TestNode } from './helpers/node.ts';
import { idem, startTestNode } from './helpers/node.ts';

interface Seen { id: string; accountId: string; type: string; msgId: string | undefined; subject: string }

let nats: NatsServers;
let t: TestNode;
let tenant: { id: string; key: string };
let bus: Bus | undefined;
let runner: ConsumerRunner | undefined;
const seen: Seen[] = [];
const accounts: string[] = [];

beforeAll(async () => {
  nats = await startNatsServers(1, { namePrefix: 'geopay-event-bus' });
  t = await startTestNode('event_bus', { natsUrls: nats.urls.join(','), webhookPollMs: 50 });
  tenant = await t.tenant('bus');
  bus = await connectBus({ urls: nats.urls, name: 'test-reader', logger: pino({ level: 'silent' }) });
  // The node makes the stream once it reached the bus.
  for (let i = 0; ; i++) {
    try {
      await bus.ensureConsumer(EVENTS_STREAM, { durable: 'test', filterSubject: `geopay.events.${tenant.id}.>`, ackWaitMs: 5_000, maxAckPending: 1_000 });
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  runner = await bus.consume(EVENTS_STREAM, 'test', async (m) => {
    const e = JSON.parse(new TextDecoder().decode(m.data)) as { id: string; accountId: string; type: string };
    seen.push({ id: e.id, accountId: e.accountId, type: e.type, msgId: m.msgId, subject: m.subject });
    return 'ack';
  });
}, 60_000);

afterAll(async () => {
  await runner?.stop();
  await bus?.close();
  await t?.close();
  await nats?.stopAll();
});

async function pay(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const [a, b] = [accounts[i % accounts.length]!, accounts[(i + 1) % accounts.length]!];
    const r = await t.call('POST', '/v1/transfers', { key: tenant.key, idem: idem(), body: { sourceAccountId: a, destinationAccountId: b, amount: '1', currency: 'USD' } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }
}

/** Every event of the tenant's accounts, as the node pages them, in each account's order. */
async function committed(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const a of accounts) {
    const page = await t.call('GET', `/v1/accounts/${a}/events?limit=1000`, { key: tenant.key });
    out.set(a, (page.body.data as { id: string }[]).map((e) => e.id));
  }
  return out;
}

/** What the bus carried, first occurrences only, per account in arrival order. */
function carried(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const ids = new Set<string>();
  for (const s of seen) {
    if (ids.has(s.id)) continue;
    ids.add(s.id);
    out.set(s.accountId, [...(out.get(s.accountId) ?? []), s.id]);
  }
  return out;
}

async function carriedAll(): Promise<Map<string, string[]>> {
  const want = await committed();
  for (let i = 0; i < 300; i++) {
    const got = carried();
    if ([...want].every(([a, ids]) => (got.get(a)?.length ?? 0) >= ids.length)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return want;
}

describe('the ledger events on the bus', () => {
  it('carries every event of every account, in its order, with the event id as Nats-Msg-Id and the subject of its tenant and account', async () => {
    for (let i = 0; i < 4; i++) {
      const a = await t.account(tenant.key);
      accounts.push(a);
      await t.deposit(tenant.key, a, '100');
    }
    await pay(8);
    const want = await carriedAll();
    expect(carried()).toEqual(want);
    for (const s of seen) {
      expect(s.msgId).toBe(s.id);
      expect(s.subject).toBe(`geopay.events.${tenant.id}.${s.accountId}`);
    }
  });

  it('goes on paying while the bus is killed, and publishes what was committed meanwhile once it is back: nothing skipped', async () => {
    await nats.kill9(0);
    await pay(6);
    await nats.restart(0);
    const want = await carriedAll();
    expect(carried()).toEqual(want);
  }, 60_000);
});
