// The chaos runs' network layer (test/helpers/netns.ts) against real kernel namespaces: hosts
// reach each other and the root namespace, a partition is a silent drop between exactly the pairs
// it names, a delay lengthens exactly those round trips, both compose, and destroy() and
// removeStaleNetworks() leave no namespace or link behind. Echo servers run inside the hosts'
// namespaces; clients run there too, so every check crosses the bridge like a region's traffic.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect, type Server } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetwork, removeStaleNetworks, requireNetns, type Network } from './helpers/netns.ts';

const projectRoot = fileURLToPath(new URL('..', import.meta.url));
const helperUrl = pathToFileURL(fileURLToPath(new URL('./helpers/netns.ts', import.meta.url))).href;
const echoPort = 7000;
/** Nothing listens here: a connect to it is refused, the control for "timed out, not refused". */
const closedPort = 7001;
/** A partitioned connect must still be hanging after this; an unpartitioned one takes milliseconds. */
const connectTimeoutMs = 1_000;
/** Round trips under a 50 ms delay take ~100 ms each; five of them plus the handshake fit well within this. */
const delayedTimeoutMs = 5_000;
const delayMs = 50;
/** Without a delay a round trip over the bridge takes well under a millisecond; 30 is the loaded-machine margin. */
const undelayedBoundMs = 30;

const echoServerSource = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('error', () => {});
  socket.pipe(socket);
}).listen(Number(port), host, () => process.stdout.write('listening\\n'));
`;

// Connects, sends one byte and waits for its echo `rounds` times, timing each, then (when asked)
// sends `bulkBytes` at once and checks they all come back unchanged; prints one JSON line.
const echoClientSource = `
const net = require('node:net');
const [host, port, timeoutMs, rounds, bulkBytes] = process.argv.slice(1).map((arg, i) => (i === 0 ? arg : Number(arg)));
const result = { connected: false, timedOut: false, rttsMs: [] };
const finish = (extra) => {
  process.stdout.write(JSON.stringify({ ...result, ...extra }) + '\\n');
  process.exit(0);
};
const socket = net.connect({ host, port });
socket.setNoDelay(true);
setTimeout(() => finish({ timedOut: true }), timeoutMs);
socket.on('error', (err) => finish({ error: err.code }));
const bulk = Buffer.alloc(bulkBytes);
for (let i = 0; i < bulkBytes; i += 1) bulk[i] = i % 251;
const echoed = [];
let echoedBytes = 0;
let sentAt = 0;
const ping = () => {
  sentAt = performance.now();
  socket.write('x');
};
socket.on('connect', () => {
  result.connected = true;
  ping();
});
socket.on('data', (chunk) => {
  if (result.rttsMs.length < rounds) {
    result.rttsMs.push(performance.now() - sentAt);
    if (result.rttsMs.length < rounds) ping();
    else if (bulkBytes === 0) finish({});
    else socket.write(bulk);
    return;
  }
  echoed.push(chunk);
  echoedBytes += chunk.length;
  if (echoedBytes >= bulkBytes) finish({ bulkEchoed: Buffer.concat(echoed).equals(bulk) });
});
`;

interface EchoResult {
  connected: boolean;
  timedOut: boolean;
  error?: string;
  rttsMs: number[];
  /** Whether the bulk payload came back intact; only when one was sent. */
  bulkEchoed?: boolean;
}

interface EchoOptions {
  port?: number;
  rounds?: number;
  timeoutMs?: number;
  bulkBytes?: number;
}

async function outputOf(child: ChildProcess): Promise<string> {
  let out = '';
  let err = '';
  child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${child.spawnargs.join(' ')} exited ${code}: ${err}`);
  return out;
}

/** Runs the echo client inside host `from`'s namespace against `toIp`. */
async function echoFrom(network: Network, from: string, toIp: string, opts: EchoOptions = {}): Promise<EchoResult> {
  const [file, ...prefix] = network.execPrefix(from);
  const args = [opts.port ?? echoPort, opts.timeoutMs ?? connectTimeoutMs, opts.rounds ?? 1, opts.bulkBytes ?? 0].map(String);
  const child = spawn(file as string, [...prefix, process.execPath, '-e', echoClientSource, toIp, ...args]);
  return JSON.parse(await outputOf(child)) as EchoResult;
}

const between = (network: Network, from: string, to: string, opts: EchoOptions = {}): Promise<EchoResult> =>
  echoFrom(network, from, network.hosts[to]!.ip, opts);

/** The same exchange from this process, in the root namespace. */
function echoFromRoot(ip: string, rounds = 1): Promise<EchoResult> {
  return new Promise((resolve) => {
    const result: EchoResult = { connected: false, timedOut: false, rttsMs: [] };
    const socket = connect({ host: ip, port: echoPort });
    const finish = (extra: Partial<EchoResult>) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...result, ...extra });
    };
    const timer = setTimeout(() => finish({ timedOut: true }), connectTimeoutMs);
    let sentAt = 0;
    const ping = () => {
      sentAt = performance.now();
      socket.write('x');
    };
    socket.setNoDelay(true);
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ error: err.code }));
    socket.on('connect', () => {
      result.connected = true;
      ping();
    });
    socket.on('data', () => {
      result.rttsMs.push(performance.now() - sentAt);
      if (result.rttsMs.length < rounds) ping();
      else finish({});
    });
  });
}

const minRtt = (result: EchoResult): number => {
  expect(result, JSON.stringify(result)).toMatchObject({ connected: true, timedOut: false });
  return Math.min(...result.rttsMs);
};

function expectEcho(result: EchoResult): void {
  expect(result).toEqual({ connected: true, timedOut: false, rttsMs: [expect.any(Number)] });
}

/** A silent drop: still not connected when the client gave up, and no error (no RST, no ICMP). */
function expectTimeout(result: EchoResult): void {
  expect(result).toEqual({ connected: false, timedOut: true, rttsMs: [] });
}

async function startEchoServer(network: Network, name: string): Promise<ChildProcess> {
  const [file, ...prefix] = network.execPrefix(name);
  const child = spawn(file as string, [...prefix, process.execPath, '-e', echoServerSource, network.hosts[name]!.ip, String(echoPort)]);
  const [chunk] = (await Promise.race([once(child.stdout, 'data'), once(child, 'exit')])) as [Buffer | number];
  if (!Buffer.isBuffer(chunk) || !chunk.toString('utf8').includes('listening')) throw new Error(`echo server in ${name} did not start: ${chunk}`);
  return child;
}

async function stopAll(children: ChildProcess[]): Promise<void> {
  await Promise.all(children.splice(0).map(async (child) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }));
}

const sh = (file: string, ...args: string[]): string => execFileSync(file, args, { encoding: 'utf8' });
const namespacesNow = (): string[] => sh('ip', 'netns', 'list').split('\n').map((line) => line.split(' ')[0]!).filter(Boolean);
const linksNow = (): string[] => sh('ip', '-o', 'link', 'show').split('\n').map((line) => /^\d+: ([^:@\s]+)/.exec(line)?.[1] ?? '').filter(Boolean);
const ownedBy = (prefix: string) => (name: string): boolean => name === prefix || name.startsWith(`${prefix}-`);

/** Filters on a host's eth0 that match an address: one per partitioned peer. */
function dropFilterCount(network: Network, name: string): number {
  const [file, ...prefix] = network.execPrefix(name);
  return sh(file!, ...prefix, 'tc', 'filter', 'show', 'dev', 'eth0').split('\n').filter((line) => line.includes('match')).length;
}

// The owner of a network in a child process: it makes the network, prints its prefix and then
// exits at once when a line arrives on its stdin; otherwise it waits to be signalled.
const ownerSource = `
import { createNetwork } from ${JSON.stringify(helperUrl)};
const network = await createNetwork(['x', 'y']);
await network.delay(['x'], ['y'], 5);
process.stdout.write(network.prefix + '\\n');
process.stdin.once('data', () => process.exit(0));
`;

interface Owner {
  child: ChildProcess;
  prefix: string;
}

async function startOwner(): Promise<Owner> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', ownerSource], { cwd: projectRoot });
  let err = '';
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
  const [chunk] = (await Promise.race([once(child.stdout, 'data'), once(child, 'exit')])) as [Buffer | number];
  if (!Buffer.isBuffer(chunk)) throw new Error(`the network's owner exited (${chunk}) before making it: ${err}`);
  const prefix = chunk.toString('utf8').trim();
  // Made, so the absence checked afterwards is the cleanup's doing.
  expect(namespacesNow().filter(ownedBy(prefix)).sort()).toEqual([prefix, `${prefix}-x`, `${prefix}-y`]);
  expect(linksNow().filter(ownedBy(prefix))).toEqual([`${prefix}-r`]);
  return { child, prefix };
}

function expectGone(prefix: string): void {
  expect(namespacesNow().filter(ownedBy(prefix))).toEqual([]);
  expect(linksNow().filter(ownedBy(prefix))).toEqual([]);
}

let network: Network;
const servers: ChildProcess[] = [];

beforeAll(async () => {
  // No skip: a machine that cannot run this fails here with requireNetns()'s message.
  requireNetns();
  network = await createNetwork(['a', 'b', 'c']);
  for (const name of ['a', 'b', 'c']) servers.push(await startEchoServer(network, name));
});

afterAll(async () => {
  await stopAll(servers);
  await network?.destroy();
});

describe('a network of namespaces: reachability', () => {
  it('reaches every host from the root namespace, and one host from another', async () => {
    const fromRoot = await Promise.all(['a', 'b', 'c'].map((name) => echoFromRoot(network.hosts[name]!.ip)));
    for (const result of fromRoot) expectEcho(result);
    expectEcho(await between(network, 'a', 'b'));
    // The control for the partition checks below: a port with no server is refused at once.
    expect(await between(network, 'a', 'b', { port: closedPort })).toMatchObject({ connected: false, timedOut: false, error: 'ECONNREFUSED' });
  });

  it('reaches a server in the root namespace bound to rootIp from a host', async () => {
    const server: Server = createServer((socket) => socket.pipe(socket));
    server.listen(0, network.rootIp);
    await once(server, 'listening');
    try {
      const { port } = server.address() as { port: number };
      expectEcho(await echoFrom(network, 'c', network.rootIp, { port }));
    } finally {
      server.close();
    }
  });
});

describe('a network of namespaces: partitions and delays', () => {
  const rounds = { rounds: 5, timeoutMs: delayedTimeoutMs };
  const delayedBoundMs = 2 * delayMs - 10;

  it('partition drops a<->b silently and nothing else; heal restores it', async () => {
    await network.partition(['a'], ['b']);
    await network.partition(['b'], ['a']);
    // Idempotent per pair: one filter on each side, however often the pair is named.
    expect([dropFilterCount(network, 'a'), dropFilterCount(network, 'b'), dropFilterCount(network, 'c')]).toEqual([1, 1, 0]);
    const [aToB, bToA, aToC, bToC] = await Promise.all([
      between(network, 'a', 'b'), between(network, 'b', 'a'), between(network, 'a', 'c'), between(network, 'b', 'c'),
    ]);
    expectTimeout(aToB);
    expectTimeout(bToA);
    expectEcho(aToC);
    expectEcho(bToC);
    expectEcho(await echoFromRoot(network.hosts.a!.ip));
    expectEcho(await echoFromRoot(network.hosts.b!.ip));
    await network.heal();
    expect([dropFilterCount(network, 'a'), dropFilterCount(network, 'b')]).toEqual([0, 0]);
    expectEcho(await between(network, 'a', 'b'));
  });

  it(`delay(['a'], ['b'], ${delayMs}) lengthens a<->b round trips only; undelay restores them`, async () => {
    await network.delay(['a'], ['b'], delayMs);
    const [aToB, bToA, aToC] = await Promise.all([
      // A bulk payload too: full-size segments through the tunnel, checksums and MTU included.
      between(network, 'a', 'b', { ...rounds, bulkBytes: 256 * 1024 }), between(network, 'b', 'a', rounds), between(network, 'a', 'c', rounds),
    ]);
    const rootToA = await echoFromRoot(network.hosts.a!.ip, 5);
    console.log(`round trips under a ${delayMs} ms delay, min of 5: a->b ${minRtt(aToB).toFixed(1)} ms, b->a ${minRtt(bToA).toFixed(1)} ms, `
      + `a->c ${minRtt(aToC).toFixed(1)} ms, root->a ${minRtt(rootToA).toFixed(1)} ms`);
    expect(minRtt(aToB)).toBeGreaterThanOrEqual(delayedBoundMs);
    expect(aToB.bulkEchoed).toBe(true);
    expect(minRtt(bToA)).toBeGreaterThanOrEqual(delayedBoundMs);
    expect(minRtt(aToC)).toBeLessThan(undelayedBoundMs);
    expect(minRtt(rootToA)).toBeLessThan(undelayedBoundMs);
    await network.undelay();
    const after = await between(network, 'a', 'b', rounds);
    console.log(`after undelay: a->b ${minRtt(after).toFixed(1)} ms`);
    expect(minRtt(after)).toBeLessThan(undelayedBoundMs);
  });

  it('delay and partition compose: neither removes the other', async () => {
    await network.partition(['a'], ['b']);
    await network.delay(['a'], ['b', 'c'], delayMs);
    const [cut, slow] = await Promise.all([between(network, 'a', 'b'), between(network, 'a', 'c', rounds)]);
    expectTimeout(cut);
    expect(minRtt(slow)).toBeGreaterThanOrEqual(delayedBoundMs);
    await network.heal();
    expect(minRtt(await between(network, 'a', 'b', rounds))).toBeGreaterThanOrEqual(delayedBoundMs);
    await network.partition(['a'], ['b']);
    await network.undelay();
    const [stillCut, fast] = await Promise.all([between(network, 'a', 'b'), between(network, 'a', 'c', rounds)]);
    expectTimeout(stillCut);
    expect(minRtt(fast)).toBeLessThan(undelayedBoundMs);
    await network.heal();
    expectEcho(await between(network, 'a', 'b'));
  });
});

describe('a network of namespaces: cleanup', () => {
  it('the exit hook removes the network when its owner exits without destroy()', async () => {
    const { child, prefix } = await startOwner();
    const exited = once(child, 'exit');
    child.stdin?.write('exit\n');
    expect(await exited).toEqual([0, null]);
    expectGone(prefix);
  });

  it('the signal hook removes the network when its owner is interrupted, and the owner still dies of the signal', async () => {
    const { child, prefix } = await startOwner();
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    expect(await exited).toEqual([null, 'SIGINT']);
    expectGone(prefix);
  });

  it('removeStaleNetworks removes the network of a SIGKILLed owner and leaves live ones', async () => {
    const { child, prefix } = await startOwner();
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
    // Nothing ran in the owner: everything is still there.
    expect(namespacesNow().filter(ownedBy(prefix))).toHaveLength(3);
    await removeStaleNetworks();
    expectGone(prefix);
    // This process's network is alive and untouched.
    expect(namespacesNow().filter(ownedBy(network.prefix))).toHaveLength(4);
    expectEcho(await between(network, 'a', 'b'));
  });

  it('destroy removes every namespace and link of the run, and may be called again', async () => {
    expect(namespacesNow().filter(ownedBy(network.prefix))).toHaveLength(4);
    expect(linksNow().filter(ownedBy(network.prefix))).toEqual([`${network.prefix}-r`]);
    // A process inside a namespace would keep it alive after its name is gone.
    await stopAll(servers);
    await network.destroy();
    await network.destroy();
    expectGone(network.prefix);
  });
});
