// The bus layer (src/bus) against real nats-server processes that this file starts on free
// ports (never the machine's own at 4222): idempotent setup, deduplicated publishing, the pull
// runner's ack/retry contract, a consumer process killed between handling and acking, a server
// SIGKILLed and restarted on its store, and an R3 stream on a three-server cluster losing a server.
import { spawn, type ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, type Bus, type BusMessage, type ConsumerRunner, type HandlerFailure, type HandlerOutcome } from '../src/bus/index.ts';
import { freePort } from './helpers/cluster.ts';
import { installNatsServerCommand, startNatsServers, type NatsServers } from './helpers/nats.ts';
import { requireBinary } from './helpers/prereq.ts';

requireBinary('nats-server', 'nats-server', installNatsServerCommand);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (m: BusMessage) => new TextDecoder().decode(m.data);
/** The shortest ack wait the layer accepts: a delivery the handler never settles comes back after it. */
const ackWaitMs = 1_000;
/** Short retry delays, so a failing message comes back many times within a test. */
const fastRetries = { retryDelayMs: 50, maxRetryDelayMs: 200 };

/** Polls `probe` until it returns something other than undefined/false; fails with `what` past the bound. */
async function eventually<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, boundMs = 15_000): Promise<T> {
  const deadline = Date.now() + boundMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) throw new Error(`not within ${boundMs} ms: ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    await sleep(50);
  }
}

/** A logger whose JSON lines the test can read. */
function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

/** Every delivery a handler saw, and what it answered. */
function recorder(answer: (m: BusMessage) => HandlerOutcome | Promise<HandlerOutcome>) {
  const seen: { subject: string; data: string; msgId: string | undefined; deliveryCount: number; streamSeq: number; trace: string | undefined }[] = [];
  const handler = async (m: BusMessage): Promise<HandlerOutcome> => {
    seen.push({ subject: m.subject, data: text(m), msgId: m.msgId, deliveryCount: m.deliveryCount, streamSeq: m.streamSeq, trace: m.header('Geopay-Trace') });
    return answer(m);
  };
  return { seen, handler };
}

const runners: ConsumerRunner[] = [];
afterEach(async () => {
  await Promise.all(runners.splice(0).map((r) => r.stop()));
});

describe('bus on one nats-server', () => {
  let servers: NatsServers;
  let bus: Bus;
  const captured = capturingLogger();

  beforeAll(async () => {
    servers = await startNatsServers(1, { namePrefix: 'geopay-bus-test' });
    bus = await connectBus({ urls: servers.urls, name: 'bus-test', logger: captured.logger });
  });
  afterAll(async () => {
    await bus?.close();
    await servers?.stopAll();
  });

  /** A stream and consumer of the test's own, so tests share the server and nothing else. */
  async function setUp(name: string, ack = ackWaitMs): Promise<{ stream: string; subject: string; durable: string }> {
    const stream = `T_${name}`;
    await bus.ensureStream({ name: stream, subjects: [`t.${name}.>`], replicas: 1 });
    await bus.ensureConsumer(stream, { durable: 'worker', filterSubject: `t.${name}.>`, ackWaitMs: ack, maxAckPending: 64 });
    return { stream, subject: `t.${name}.x`, durable: 'worker' };
  }

  it('ensureStream and ensureConsumer create once, are no-ops when repeated, and update what differs', async () => {
    const spec = { name: 'T_setup', subjects: ['t.setup.>'], replicas: 1, duplicateWindowMs: 60_000 };
    expect((await bus.ensureStream(spec)).outcome).toBe('created');
    expect((await bus.ensureStream(spec)).outcome).toBe('unchanged');
    expect((await bus.ensureStream({ ...spec, subjects: ['t.setup.>', 't.setup2.>'], maxAgeMs: 3_600_000 })).outcome).toBe('updated');
    expect((await bus.ensureStream({ ...spec, subjects: ['t.setup2.>', 't.setup.>'], maxAgeMs: 3_600_000 })).outcome).toBe('unchanged');

    const consumer = { durable: 'worker', filterSubject: 't.setup.>', ackWaitMs: 5_000, maxAckPending: 10 };
    expect(await bus.ensureConsumer('T_setup', consumer)).toBe('created');
    expect(await bus.ensureConsumer('T_setup', consumer)).toBe('unchanged');
    expect(await bus.ensureConsumer('T_setup', { ...consumer, ackWaitMs: 7_000, maxAckPending: 20 })).toBe('updated');
    expect(await bus.ensureConsumer('T_setup', { ...consumer, ackWaitMs: 7_000, maxAckPending: 20 })).toBe('unchanged');
    expect(await bus.ensureConsumer('T_setup', { ...consumer, filterSubject: 't.setup2.>', ackWaitMs: 7_000, maxAckPending: 20 })).toBe('updated');
    // An update JetStream refuses fails with what differs and the server's reason.
    await expect(bus.ensureStream({ ...spec, maxAgeMs: 10_000 })).rejects.toThrow(/T_setup differs \(.*max age 3600000 ms -> 10000 ms\).*duplicates window can not be larger/);
    // A single server cannot hold three replicas: the start fails, it does not pretend.
    await expect(bus.ensureStream({ ...spec, name: 'T_setup_r3', replicas: 3 })).rejects.toThrow(/T_setup_r3 could not be created/);
    await expect(bus.ensureConsumer('T_missing', consumer)).rejects.toThrow(/T_missing/);
    // A runner needs its consumer set up first: a missing one fails the start.
    await expect(bus.consume('T_setup', 'nobody', async () => 'ack')).rejects.toThrow(/consumer not found/);
  });

  it('connectBus fails within its bound when no server answers, instead of waiting for one', async () => {
    const nobody = `nats://127.0.0.1:${await freePort()}`;
    await expect(connectBus({ urls: [nobody], name: 'nobody', logger: pino({ level: 'silent' }), connectTimeoutMs: 1_000 })).rejects.toThrow();
  });

  it('the same msgId twice within the duplicate window is stored once; the second ack says duplicate', async () => {
    const { stream, subject, durable } = await setUp('dedupe');
    const first = await bus.publish(subject, 'leg-1', { msgId: 'tr_1:credit', headers: { 'Geopay-Trace': 'abc' } });
    const second = await bus.publish(subject, 'leg-1 again', { msgId: 'tr_1:credit' });
    const other = await bus.publish(subject, 'leg-2', { msgId: 'tr_1:outcome' });
    expect(first).toEqual({ stream, streamSeq: 1, duplicate: false });
    expect(second).toEqual({ stream, streamSeq: 1, duplicate: true });
    expect(other).toEqual({ stream, streamSeq: 2, duplicate: false });
    expect((await bus.streamState(stream)).messages).toBe(2);

    const { seen, handler } = recorder(() => 'ack');
    runners.push(await bus.consume(stream, durable, handler));
    await eventually('both delivered', () => seen.length >= 2);
    expect(seen).toEqual([
      { subject, data: 'leg-1', msgId: 'tr_1:credit', deliveryCount: 1, streamSeq: 1, trace: 'abc' },
      { subject, data: 'leg-2', msgId: 'tr_1:outcome', deliveryCount: 1, streamSeq: 2, trace: undefined },
    ]);
    await expect(bus.publish(subject, 'x', { msgId: 'm', headers: { 'nats-msg-id': 'other' } })).rejects.toThrow(/msgId/);
  });

  it("a handler answering 'retry' twice then 'ack' sees three deliveries, and the message is acked for good", async () => {
    const { stream, subject, durable } = await setUp('retry');
    const failures: HandlerFailure[] = [];
    const { seen, handler } = recorder((m) => (m.deliveryCount < 3 ? 'retry' : 'ack'));
    runners.push(await bus.consume(stream, durable, handler, { ...fastRetries, onFailure: (f) => failures.push(f) }));
    await bus.publish(subject, 'p', { msgId: 'retry-1' });

    await eventually('acked', async () => seen.length === 3 && (await bus.consumerState(stream, durable)).ackPending === 0);
    expect(seen.map((s) => s.deliveryCount)).toEqual([1, 2, 3]);
    expect(failures.map((f) => [f.reason, f.deliveryCount])).toEqual([['retry', 1], ['retry', 2]]);
    // Past another ack wait and the longest retry delay: nothing comes back.
    await sleep(ackWaitMs + fastRetries.maxRetryDelayMs + 300);
    expect(seen).toHaveLength(3);
    expect(await bus.consumerState(stream, durable)).toEqual({ pending: 0, ackPending: 0, redelivered: 0 });
  });

  it('a message whose handler always throws is redelivered again and again, logged and counted, never dropped', async () => {
    const { stream, subject, durable } = await setUp('poison');
    const failures: HandlerFailure[] = [];
    const broken = await bus.consume(stream, durable, async () => {
      throw new Error('database unavailable');
    }, { ...fastRetries, warnAfterDeliveries: 2, onFailure: (f) => failures.push(f) });
    runners.push(broken);
    await bus.publish(subject, 'poison', { msgId: 'poison-1' });

    await eventually('delivered at least 4 times', () => failures.length >= 4);
    expect(failures.slice(0, 4).map((f) => [f.reason, f.deliveryCount, f.keepsFailing, f.msgId])).toEqual([
      ['error', 1, false, 'poison-1'],
      ['error', 2, true, 'poison-1'],
      ['error', 3, true, 'poison-1'],
      ['error', 4, true, 'poison-1'],
    ]);
    expect(String(failures[0]!.err)).toMatch(/database unavailable/);
    const warned = captured.lines.filter((l) => l.msg === 'bus message keeps failing' && l.stream === stream);
    expect(warned.map((l) => l.deliveryCount).slice(0, 3)).toEqual([2, 3, 4]);
    expect(warned[0]).toMatchObject({ level: 40, subject, msgId: 'poison-1', reason: 'error', err: { message: 'database unavailable' } });

    // Still in the stream and still owed to the consumer: a fixed handler gets it and acks it.
    await broken.stop();
    expect((await bus.streamState(stream)).messages).toBe(1);
    const { seen, handler } = recorder(() => 'ack');
    runners.push(await bus.consume(stream, durable, handler));
    await eventually('the fixed handler got it', () => seen.length === 1);
    expect(seen[0]!.deliveryCount).toBeGreaterThan(4);
    await eventually('acked', async () => (await bus.consumerState(stream, durable)).ackPending === 0);
  });

  it('a consumer process killed after its handler ran but before it acked: the message is delivered again', async () => {
    const { stream, subject, durable } = await setUp('crash');
    await bus.publish(subject, 'crash me', { msgId: 'crash-1' });
    const busModule = new URL('../src/bus/index.ts', import.meta.url).href;
    // The handler reports the message, then never settles: the kill lands between its effect and the ack.
    const code = `
      import { pino } from 'pino';
      const { connectBus } = await import(${JSON.stringify(busModule)});
      const bus = await connectBus({ urls: ${JSON.stringify(servers.urls)}, name: 'crashing-consumer', logger: pino({ level: 'silent' }) });
      await bus.consume(${JSON.stringify(stream)}, ${JSON.stringify(durable)}, async (m) => {
        console.log('handled ' + m.streamSeq + ' ' + m.deliveryCount);
        return new Promise(() => {});
      });
    `;
    const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    try {
      await eventually(`the child handled the message: ${out}`, () => out.includes('handled 1 1'), 20_000);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    expect((await bus.consumerState(stream, durable)).ackPending).toBe(1);

    const { seen, handler } = recorder(() => 'ack');
    runners.push(await bus.consume(stream, durable, handler));
    await eventually('redelivered after the ack wait', () => seen.length === 1);
    expect(seen[0]).toMatchObject({ streamSeq: 1, deliveryCount: 2, msgId: 'crash-1', data: 'crash me' });
  });

  it('stop() waits for a handler in flight and acks what it answered; what was pulled but not started is delivered again', async () => {
    const { stream, subject, durable } = await setUp('drain');
    let release: (v: HandlerOutcome) => void = () => undefined;
    const { seen, handler } = recorder(() => new Promise<HandlerOutcome>((r) => (release = r)));
    const runner = await bus.consume(stream, durable, handler, { batchSize: 4 });
    for (let i = 1; i <= 3; i++) await bus.publish(subject, `m${i}`, { msgId: `drain-${i}` });
    await eventually('first message in the handler', () => seen.length === 1);
    let stopResolved = false;
    const stopped = runner.stop().then(() => (stopResolved = true));
    await sleep(200);
    expect(stopResolved).toBe(false);
    release('ack');
    await stopped;
    expect(seen.map((s) => s.data)).toEqual(['m1']);
    // m1 was acked by the draining runner; m2 and m3 come back (naked, or past their ack wait),
    // in no promised order, and m1 does not.
    const { seen: later, handler: laterHandler } = recorder(() => 'ack');
    runners.push(await bus.consume(stream, durable, laterHandler));
    await eventually('the two others delivered', () => later.length >= 2);
    expect(later.map((s) => s.data).sort()).toEqual(['m2', 'm3']);
    await eventually('all acked', async () => (await bus.consumerState(stream, durable)).ackPending === 0);
    expect(later.map((s) => s.data).sort()).toEqual(['m2', 'm3']);
  });
});

describe('bus across a nats-server crash and restart', () => {
  let servers: NatsServers;
  let bus: Bus;

  beforeAll(async () => {
    servers = await startNatsServers(1, { namePrefix: 'geopay-bus-restart' });
    bus = await connectBus({ urls: servers.urls, name: 'bus-restart-test', logger: pino({ level: 'silent' }), reconnectWaitMs: 100 });
  });
  afterAll(async () => {
    await bus?.close();
    await servers?.stopAll();
  });

  it('the consumer resumes after the server was SIGKILLed and restarted on its store, and gets what was published after', async () => {
    await bus.ensureStream({ name: 'LEGS', subjects: ['legs.>'], replicas: 1 });
    await bus.ensureConsumer('LEGS', { durable: 'eu', filterSubject: 'legs.eu', ackWaitMs, maxAckPending: 64 });
    const { seen, handler } = recorder(() => 'ack');
    runners.push(await bus.consume('LEGS', 'eu', handler));
    await bus.publish('legs.eu', 'before', { msgId: 'before' });
    await eventually('delivered before the crash', () => seen.length === 1);
    await eventually('acked before the crash', async () => (await bus.consumerState('LEGS', 'eu')).ackPending === 0);

    await servers.kill9(0);
    await servers.restart(0);
    // The client reconnects on its own; a publish before that fails and is retried (the outbox relay's job).
    const ack = await eventually('publish after the restart', () => bus.publish('legs.eu', 'after', { msgId: 'after' }));
    expect(ack).toEqual({ stream: 'LEGS', streamSeq: 2, duplicate: false });
    // The store survived: the setup is a no-op and the message ids of the window are remembered.
    expect((await bus.ensureStream({ name: 'LEGS', subjects: ['legs.>'], replicas: 1 })).outcome).toBe('unchanged');
    expect(await bus.publish('legs.eu', 'before again', { msgId: 'before' })).toMatchObject({ streamSeq: 1, duplicate: true });

    await eventually('delivered after the restart', () => seen.some((s) => s.data === 'after'));
    // At least once: a SIGKILLed server may forget the last acks it confirmed (its consumer
    // state reaches the disk asynchronously), so 'before' may come once more; nothing else does.
    const delivered = seen.map((s) => `${s.data}@${s.streamSeq}`);
    expect(delivered[0]).toBe('before@1');
    expect(delivered.slice(1).filter((d) => d !== 'before@1')).toEqual(['after@2']);
    await eventually('acked', async () => (await bus.consumerState('LEGS', 'eu')).ackPending === 0);
  });
});

describe('bus on a three-server JetStream cluster', () => {
  let servers: NatsServers;
  let bus: Bus;

  beforeAll(async () => {
    servers = await startNatsServers(3, { namePrefix: 'geopay-bus-cluster' });
    bus = await connectBus({ urls: servers.urls, name: 'bus-cluster-test', logger: pino({ level: 'silent' }), reconnectWaitMs: 100 });
  });
  afterAll(async () => {
    await bus?.close();
    await servers?.stopAll();
  });

  it('an R3 stream takes publishes and feeds its consumer, and keeps both going with its leader killed', async () => {
    expect(await bus.ensureStream({ name: 'EVENTS', subjects: ['events.>'], replicas: 3 })).toEqual({ name: 'EVENTS', replicas: 3, outcome: 'created' });
    await bus.ensureConsumer('EVENTS', { durable: 'webhooks', filterSubject: 'events.>', ackWaitMs, maxAckPending: 64 });
    expect(await bus.publish('events.t1', 'e1', { msgId: 'e1' })).toEqual({ stream: 'EVENTS', streamSeq: 1, duplicate: false });

    // The stream's leader is the victim. The consumer runs on a connection to the two others
    // only: it sees no disconnect, so if the consumer's leader goes too, only the missed
    // heartbeats of its pull tell it to pull again from the new one.
    const { leader } = await bus.streamState('EVENTS');
    const victim = servers.names.indexOf(leader ?? '');
    expect(victim).toBeGreaterThanOrEqual(0);
    const consumerBus = await connectBus({ urls: servers.urls.filter((_, i) => i !== victim), name: 'bus-cluster-consumer', logger: pino({ level: 'silent' }) });
    try {
      const { seen, handler } = recorder(() => 'ack');
      runners.push(await consumerBus.consume('EVENTS', 'webhooks', handler));
      await eventually('consumed on the cluster', () => seen.length === 1);

      await servers.kill9(victim);
      // The survivors (2 of 3, a majority) elect a new leader; publishes until then fail and are retried.
      const ack = await eventually('publish acked with one server down', () => bus.publish('events.t1', 'e2', { msgId: 'e2' }), 30_000);
      expect(ack).toEqual({ stream: 'EVENTS', streamSeq: 2, duplicate: false });
      await eventually('consumed with one server down', () => seen.length >= 2, 30_000);
      expect(seen.map((s) => s.data)).toEqual(['e1', 'e2']);
      expect((await bus.streamState('EVENTS')).leader).not.toBe(leader);
    } finally {
      await Promise.all(runners.splice(0).map((r) => r.stop()));
      await consumerBus.close();
    }
  });
});
