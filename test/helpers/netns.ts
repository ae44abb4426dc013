// A network of Linux network namespaces for the chaos runs: one namespace per host (a region's
// nodes and PostgreSQL, a Redis master, nats-server), joined by a bridge, so a run can cut one
// region off from the others (silent drops: timeouts, not refusals) and add WAN latency between
// them, with the real kernel TCP stack on both ends. Needs root, iproute2 and a kernel with veth,
// bridge, vxlan, tc htb and u32.
//
// No tc netem, prio or gact: the kernel this was written on (6.18, built without
// CONFIG_NET_SCH_NETEM and without loadable modules) has none of them, so the layout uses only
// what it has. A partition is u32 filters that classify into an htb class whose pfifo holds
// nothing; a delayed pair's traffic is routed through a VXLAN tunnel whose UDP datagrams pass a
// small relay process in the root namespace that holds each one for the delay. Drops live in tc
// on each host's eth0, delays in routes, tunnels and the relay: adding or removing either never
// touches the other.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { MissingPrerequisite, requireBinary } from './prereq.ts';

const execFileAsync = promisify(execFile);

export const installIproute2Command = 'apt-get install -y iproute2';
/** The run tag that starts every name, unless createNetwork is given another. */
const defaultPrefix = 'gp';
/** Linux caps interface names at 15 bytes (IFNAMSIZ - 1). */
const maxInterfaceName = 15;
/** One ip or tc command takes milliseconds; a hung one must not hang the run. */
const commandTimeoutMs = 15_000;
/** The relay is a bare node process; it prints "ready" well within this. */
const relayStartTimeoutMs = 10_000;
/** IANA's VXLAN port; each network's relay binds it on its own rootIp, so networks never clash. */
const vxlanPort = 4789;
/** 1500 less VXLAN's 50 bytes of headers, so a tunnelled packet fits eth0 without fragments. */
const tunnelMtu = 1450;
/** Partition filters classify into this htb class; its pfifo has room for no packet. */
const dropClass = '1:2';
/** 10.<secondOctet>.y.0/24 subnets are tried from this block: clear of Docker's 172.17 and of 10.0-10.199. */
const firstSecondOctet = 200;
const secondOctets = 40;
const subnetAttempts = 64;
const maxHosts = 250;
const hostNamePattern = /^[a-z0-9-]{1,8}$/;
const prefixPattern = /^[a-z]{1,3}$/;

export interface NetHost {
  name: string;
  /** The namespace's name, for `ip netns exec`. */
  ns: string;
  /** The host's address on the run's network. */
  ip: string;
}

export interface Network {
  /** The run name every namespace and root-namespace link of this network starts with. */
  readonly prefix: string;
  readonly hosts: Record<string, NetHost>;
  /** The root namespace's address on the network (where the test/runner process lives), to reach hosts and be reached. */
  readonly rootIp: string;
  /** argv prefix to run a command inside host `name`'s namespace: [ip, 'netns', 'exec', ns]. */
  execPrefix(name: string): string[];
  /** Silently drops every packet between each host of `a` and each host of `b`, both directions. Idempotent per pair. */
  partition(a: string[], b: string[]): Promise<void>;
  /** Removes every partition rule. */
  heal(): Promise<void>;
  /** Adds `ms` of one-way delay on traffic from each host of `a` to each host of `b` and back (a round trip gets 2*ms); a second call for a pair replaces its delay. */
  delay(a: string[], b: string[], ms: number): Promise<void>;
  /** Removes every delay. */
  undelay(): Promise<void>;
  /** Deletes every namespace and link this network made, and stops its relay. Idempotent. */
  destroy(): Promise<void>;
}

export interface CreateNetworkOptions {
  /** The tag every name starts with ([a-z]{1,3}, default 'gp'); removeStaleNetworks takes the same. */
  prefix?: string;
}

/** An ip or tc command that failed: the command line, what it was fed, and what it said. */
export class NetnsCommandFailed extends Error {
  readonly code = 'NETNS_COMMAND_FAILED';
  constructor(argv: string[], stderr: string, input: string | undefined, cause: unknown) {
    const fed = input === undefined ? '' : ` (stdin: ${JSON.stringify(input)})`;
    super(`${argv.join(' ')}${fed} failed: ${stderr.trim() || String(cause)}`, { cause });
    this.name = 'NetnsCommandFailed';
  }
}

interface Tools {
  ip: string;
  tc: string;
}

let tools: Tools | undefined;

function requireTools(): Tools {
  if (tools === undefined) requireNetns();
  return tools as Tools;
}

function stderrOf(err: unknown): string {
  const stderr = (err as { stderr?: unknown }).stderr;
  return typeof stderr === 'string' ? stderr : Buffer.isBuffer(stderr) ? stderr.toString('utf8') : '';
}

/** Runs `argv` (file first), feeding `input` on stdin; resolves to stdout. */
async function run(argv: string[], input?: string): Promise<string> {
  const [file, ...args] = argv;
  try {
    const pending = execFileAsync(file as string, args, { encoding: 'utf8', timeout: commandTimeoutMs });
    pending.child.stdin?.end(input);
    return (await pending).stdout;
  } catch (err) {
    throw new NetnsCommandFailed(argv, stderrOf(err), input, err);
  }
}

function runSync(argv: string[], input?: string): string {
  const [file, ...args] = argv;
  try {
    return execFileSync(file as string, args, { encoding: 'utf8', timeout: commandTimeoutMs, input, stdio: 'pipe' });
  } catch (err) {
    throw new NetnsCommandFailed(argv, stderrOf(err), input, err);
  }
}

/** Several ip commands in one process, inside namespace `ns`. */
function ipBatch(ns: string, lines: string[]): Promise<string> {
  return run([requireTools().ip, '-n', ns, '-batch', '-'], `${lines.join('\n')}\n`);
}

function tcBatch(ns: string, lines: string[]): Promise<string> {
  return run([requireTools().tc, '-n', ns, '-batch', '-'], `${lines.join('\n')}\n`);
}

/** The ip commands that delete what a network made; `-force` keeps going past what is already gone. */
function cleanupArgv(): string[] {
  return [requireTools().ip, '-force', '-batch', '-'];
}

// ---------------------------------------------------------------------------------------------
// Names. Every name a run makes is `<prefix>-<pid36>-<seq>` (the hub namespace), followed by
// `-<host>` (a host namespace) or `-r` (the one link in the root namespace), so a later run can
// tell whose it is and whether its owner still lives. Interfaces inside the run's namespaces
// (eth0, v-<host>, d-<host>, br0) are private to those namespaces and go with them.
// ---------------------------------------------------------------------------------------------

let networksMade = 0;

function runName(prefix: string, pid: number, seq: number | 'p'): string {
  return `${prefix}-${pid.toString(36)}-${seq}`;
}

/** The pid encoded in a name this module made with `prefix`, or undefined for anyone else's name. */
function ownerPid(name: string, prefix: string): number | undefined {
  const match = new RegExp(`^${prefix}-([0-9a-z]{1,6})-(?:\\d{1,3}|p)(?:-[a-z0-9-]{1,8})?$`).exec(name);
  return match === null ? undefined : Number.parseInt(match[1] as string, 36);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function listNamespaces(): Promise<string[]> {
  const out = await run([requireTools().ip, 'netns', 'list']);
  // "name" or "name (id: 3)", one a line.
  return out.split('\n').map((line) => line.split(' ')[0] ?? '').filter((name) => name !== '');
}

async function listRootLinks(): Promise<string[]> {
  const out = await run([requireTools().ip, '-o', 'link', 'show']);
  // "7: gp-abc-1-r@if6: <BROADCAST,...": the name sits between the index and '@' or ':'.
  return out.split('\n').map((line) => /^\d+: ([^:@\s]+)/.exec(line)?.[1] ?? '').filter((name) => name !== '');
}

// ---------------------------------------------------------------------------------------------
// Subnet. A /24 the machine does not route already, tried in an order set by pid and sequence
// so that two runs starting together try different ones; checked again after claiming it, in
// case another run claimed the same one in between.
// ---------------------------------------------------------------------------------------------

interface Range {
  first: number;
  last: number;
  dev: string | undefined;
}

const ipv4Pattern = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/;

function toRange(cidr: string, dev: string | undefined): Range | undefined {
  const match = ipv4Pattern.exec(cidr);
  if (match === null) return undefined;
  const [a, b, c, d] = match.slice(1, 5).map(Number) as [number, number, number, number];
  const bits = match[5] === undefined ? 32 : Number(match[5]);
  const address = (((a << 24) >>> 0) + (b << 16) + (c << 8) + d) >>> 0;
  const size = 2 ** (32 - bits);
  const first = address - (address % size);
  return { first, last: first + size - 1, dev };
}

/** Every IPv4 destination routed (any table) or assigned in the root namespace. */
async function rootRanges(): Promise<Range[]> {
  const { ip } = requireTools();
  const [routes, addresses] = await Promise.all([
    run([ip, '-4', '-o', 'route', 'show', 'table', 'all']),
    run([ip, '-4', '-o', 'address', 'show']),
  ]);
  const ranges: Range[] = [];
  for (const line of routes.split('\n')) {
    const words = line.trim().split(/\s+/);
    // The first address on the line is the destination ("local 10.1.2.3 dev ...", "10.1.0.0/16 dev ...");
    // on "default via X" it is the gateway, which is only more cautious.
    const destination = words.find((word) => ipv4Pattern.test(word));
    const dev = words[words.indexOf('dev') + 1];
    const range = destination === undefined ? undefined : toRange(destination, dev);
    if (range !== undefined) ranges.push(range);
  }
  for (const line of addresses.split('\n')) {
    const words = line.trim().split(/\s+/);
    const range = toRange(words[words.indexOf('inet') + 1] ?? '', words[1]);
    if (range !== undefined) ranges.push(range);
  }
  return ranges;
}

function clashes(base: string, ranges: Range[], ownDev: string): boolean {
  const subnet = toRange(`${base}.0/24`, undefined) as Range;
  return ranges.some((range) => range.dev !== ownDev && range.first <= subnet.last && subnet.first <= range.last);
}

function* candidateSubnets(pid: number, seq: number): Generator<string> {
  const span = secondOctets * 256;
  const start = (pid * 31 + seq * 7919) % span;
  for (let attempt = 0; attempt < subnetAttempts; attempt += 1) {
    // 97 is prime and does not divide span, so the walk visits distinct subnets.
    const slot = (start + attempt * 97) % span;
    yield `10.${firstSecondOctet + Math.floor(slot / 256)}.${slot % 256}`;
  }
}

/** Puts `<base>.254/24` on `rootLink` for the first free base; returns the base ("10.x.y"). */
async function claimSubnet(rootLink: string, pid: number, seq: number): Promise<string> {
  const { ip } = requireTools();
  for (const base of candidateSubnets(pid, seq)) {
    if (clashes(base, await rootRanges(), rootLink)) continue;
    await run([ip, 'address', 'add', `${base}.254/24`, 'dev', rootLink]);
    if (!clashes(base, await rootRanges(), rootLink)) return base;
    await run([ip, 'address', 'del', `${base}.254/24`, 'dev', rootLink]);
  }
  throw new Error(`no free 10.${firstSecondOctet}-${firstSecondOctet + secondOctets - 1}.y.0/24 subnet after ${subnetAttempts} tries`);
}

// ---------------------------------------------------------------------------------------------
// The relay: the WAN of delayed pairs. Each delayed pair has its own VXLAN id; the relay reads
// a datagram's id, holds it for the pair's delay and sends it to the pair's other end (or drops
// it while the pair is partitioned). A separate process, so the runner's own event loop cannot
// stretch the delays; it exits when its stdin closes, i.e. when its owner dies in any way.
//
// It also rewrites the inner TCP or UDP checksum. The tunnel device offloads that checksum, and
// between namespaces nothing ever computes it (a veth passes the packet on as "checksum to be
// done"), so a datagram the relay reads carries only the pseudo-header seed; the kernel that
// decapsulates it at the far end would drop the segment (TcpInCsumErrors). That is also why
// the tunnels have gso_max_segs 1: each datagram then holds one packet of at most the tunnel
// MTU, never a 64 KB segment still to be cut. Without ethtool (not installed here) the offload
// itself cannot be turned off.
// ---------------------------------------------------------------------------------------------

const relaySource = `
const dgram = require('node:dgram');
const readline = require('node:readline');
const [bindIp, portText] = process.argv.slice(1);
const port = Number(portText);
const pairs = new Map();
// VXLAN header (8 bytes), then the inner Ethernet frame: its EtherType at 20, IPv4 from 22.
const ipStart = 22;
const fillChecksum = (packet) => {
  if (packet.length < ipStart + 20 || packet.readUInt16BE(20) !== 0x0800) return;
  const l4 = ipStart + (packet[ipStart] & 0x0f) * 4;
  const end = ipStart + packet.readUInt16BE(ipStart + 2);
  const protocol = packet[ipStart + 9];
  const fragmented = (packet.readUInt16BE(ipStart + 6) & 0x3fff) !== 0;
  const at = protocol === 6 ? l4 + 16 : protocol === 17 ? l4 + 6 : -1;
  // A fragment's checksum covers bytes in other fragments; the kernel computed it in full anyway.
  if (fragmented || at < 0 || end > packet.length || at + 2 > end) return;
  if (protocol === 17 && packet.readUInt16BE(at) === 0) return;
  packet.writeUInt16BE(0, at);
  let sum = protocol + (end - l4);
  for (let i = ipStart + 12; i < ipStart + 20; i += 2) sum += packet.readUInt16BE(i);
  for (let i = l4; i + 1 < end; i += 2) sum += packet.readUInt16BE(i);
  if ((end - l4) % 2 === 1) sum += packet[end - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const checksum = ~sum & 0xffff;
  packet.writeUInt16BE(checksum === 0 && protocol === 17 ? 0xffff : checksum, at);
};
const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
socket.on('message', (packet, from) => {
  if (packet.length < 8) return;
  const vni = packet.readUIntBE(4, 3);
  const pair = pairs.get(vni);
  if (pair === undefined || pair.blocked) return;
  const to = from.address === pair.ends[0] ? pair.ends[1] : from.address === pair.ends[1] ? pair.ends[0] : undefined;
  if (to === undefined) return;
  fillChecksum(packet);
  setTimeout(() => {
    if (pairs.get(vni)?.blocked !== true) socket.send(packet, port, to);
  }, pair.delayMs);
});
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = JSON.parse(line);
  if (command.op === 'set') pairs.set(command.vni, { ends: command.ends, delayMs: command.delayMs, blocked: command.blocked });
  if (command.op === 'remove') pairs.delete(command.vni);
  process.stdout.write(JSON.stringify({ id: command.id }) + '\\n');
});
process.stdin.on('end', () => process.exit(0));
socket.bind(port, bindIp, () => process.stdout.write('ready\\n'));
`;

type RelayCommand =
  | { op: 'set'; vni: number; ends: [string, string]; delayMs: number; blocked: boolean }
  | { op: 'remove'; vni: number };

class Relay {
  /** Resolves once the relay listens; rejects (and the relay is killed) if it does not within the bound. */
  readonly ready: Promise<void>;
  private readonly child: ChildProcess;
  private nextId = 0;
  private readonly waiting = new Map<number, () => void>();
  private stderrTail = '';
  private exited = false;

  constructor(bindIp: string) {
    this.child = spawn(process.execPath, ['-e', relaySource, bindIp, String(vxlanPort)], { stdio: ['pipe', 'pipe', 'pipe'] });
    // A write to a relay that died fails here; the 'exit' handlers are what report it.
    this.child.stdin?.on('error', () => undefined);
    // Each command in flight listens for the relay's exit: a network's delays are set at once.
    this.child.setMaxListeners(256);
    (this.child.stdin as Socket).unref();
    (this.child.stderr as Socket).unref();
    this.child.stderr?.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-4_000);
    });
    this.child.once('exit', () => {
      this.exited = true;
    });
    this.ready = this.started().catch((err: unknown) => {
      this.stopSync();
      throw err;
    });
  }

  private started(): Promise<void> {
    const lines = createInterface({ input: this.child.stdout as Socket });
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`delay relay did not start within ${relayStartTimeoutMs} ms: ${this.stderrTail}`)), relayStartTimeoutMs);
      this.child.once('exit', (code) => reject(new Error(`delay relay exited (${code}) before it was ready: ${this.stderrTail}`)));
      lines.once('line', () => {
        clearTimeout(timer);
        lines.on('line', (line) => this.answered(line));
        this.hold(false);
        resolve();
      });
    });
  }

  /**
   * Whether the relay keeps its owner's event loop alive: only while a command awaits its answer.
   * Idle, it never stops the owner from exiting; the exit hook then kills it.
   */
  private hold(on: boolean): void {
    const stdout = this.child.stdout as Socket;
    if (on) {
      this.child.ref();
      stdout.ref();
    } else {
      this.child.unref();
      stdout.unref();
    }
  }

  private answered(line: string): void {
    const { id } = JSON.parse(line) as { id: number };
    this.waiting.get(id)?.();
    this.waiting.delete(id);
    if (this.waiting.size === 0) this.hold(false);
  }

  /** Resolves once the relay has applied the command, so no packet meets the old rule after it. */
  command(command: RelayCommand): Promise<void> {
    if (this.exited) return Promise.reject(new Error(`delay relay is gone: ${this.stderrTail}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const onExit = () => reject(new Error(`delay relay exited during ${command.op}: ${this.stderrTail}`));
      this.child.once('exit', onExit);
      if (this.waiting.size === 0) this.hold(true);
      this.waiting.set(id, () => {
        this.child.off('exit', onExit);
        resolve();
      });
      this.child.stdin?.write(`${JSON.stringify({ id, ...command })}\n`);
    });
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = once(this.child, 'exit');
    // Held, or an owner with nothing else to do could exit before destroy() deletes the namespaces.
    this.hold(true);
    this.child.kill('SIGKILL');
    await exited;
  }

  stopSync(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------
// Cleanup when the owner ends without destroy(): 'exit' covers a normal end and an uncaught
// error; a signal would end the process without 'exit', so SIGINT, SIGTERM and SIGHUP clean up
// and then, when nothing else listens for that signal, raise it again to die the default way.
// ---------------------------------------------------------------------------------------------

const live = new Set<NetworkImpl>();
let hooksInstalled = false;

function destroyAllSync(): void {
  for (const network of live) network.destroySync();
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', destroyAllSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      destroyAllSync();
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The network.
// ---------------------------------------------------------------------------------------------

type Pair = readonly [NetHost, NetHost];

interface Delayed {
  pair: Pair;
  /** The VXLAN id of the pair's tunnel, which is how the relay tells pairs apart. */
  vni: number;
  delayMs: number;
}

const pairKey = ([x, y]: Pair): string => (x.name < y.name ? `${x.name} ${y.name}` : `${y.name} ${x.name}`);

class NetworkImpl implements Network {
  readonly hosts: Record<string, NetHost> = {};
  rootIp = '';
  private readonly partitioned = new Map<string, Pair>();
  private readonly delayed = new Map<string, Delayed>();
  /** Started by the first delay(). */
  private relay: Relay | undefined;
  private nextVni = 1;
  private destroyed = false;

  constructor(
    readonly prefix: string,
    readonly hubNs: string,
    readonly rootLink: string,
  ) {}

  execPrefix(name: string): string[] {
    return [requireTools().ip, 'netns', 'exec', this.host(name).ns];
  }

  host(name: string): NetHost {
    const host = this.hosts[name];
    if (host === undefined) throw new Error(`no host ${JSON.stringify(name)} in network ${this.prefix} (hosts: ${Object.keys(this.hosts).join(', ')})`);
    return host;
  }

  /** Every unordered pair of a host of `a` with a host of `b`, once each. */
  private pairs(a: string[], b: string[]): Pair[] {
    if (this.destroyed) throw new Error(`network ${this.prefix} is destroyed`);
    const pairs = new Map<string, Pair>();
    for (const x of a) {
      for (const y of b) {
        if (x === y) throw new Error(`host ${x} is on both sides; a host cannot be cut off from itself`);
        const pair: Pair = [this.host(x), this.host(y)];
        pairs.set(pairKey(pair), pair);
      }
    }
    return [...pairs.values()];
  }

  async partition(a: string[], b: string[]): Promise<void> {
    const fresh = this.pairs(a, b).filter((pair) => !this.partitioned.has(pairKey(pair)));
    // Marked before the commands run, so a concurrent call for the same pair adds no second filter.
    for (const pair of fresh) this.partitioned.set(pairKey(pair), pair);
    await Promise.all(fresh.map(async (pair) => {
      const [x, y] = pair;
      await Promise.all([this.addDropFilter(x, y), this.addDropFilter(y, x), this.syncRelay(pairKey(pair))]);
    }));
  }

  private addDropFilter(from: NetHost, to: NetHost): Promise<string> {
    return tcBatch(from.ns, [`filter add dev eth0 parent 1: protocol ip pref 1 u32 match ip dst ${to.ip}/32 flowid ${dropClass}`]);
  }

  async heal(): Promise<void> {
    const keys = [...this.partitioned.keys()];
    const cut = new Set([...this.partitioned.values()].flat());
    this.partitioned.clear();
    // eth0's filters are partition filters only, so deleting them all removes exactly those.
    await Promise.all([
      ...[...cut].map((host) => tcBatch(host.ns, ['filter del dev eth0 parent 1:'])),
      ...keys.map((key) => this.syncRelay(key)),
    ]);
  }

  async delay(a: string[], b: string[], ms: number): Promise<void> {
    if (!Number.isFinite(ms) || ms <= 0 || ms > 60_000) throw new RangeError(`delay must be in (0, 60000] ms, got ${ms}`);
    const pairs = this.pairs(a, b);
    // Made before the first await, so two delay() calls at once start one relay.
    this.relay ??= new Relay(this.rootIp);
    await this.relay.ready;
    await Promise.all(pairs.map(async (pair) => {
      const key = pairKey(pair);
      const known = this.delayed.get(key);
      if (known !== undefined) {
        known.delayMs = ms;
        return this.syncRelay(key);
      }
      const vni = this.nextVni++;
      this.delayed.set(key, { vni, delayMs: ms, pair });
      // The relay knows the pair before any route sends it a packet.
      await this.syncRelay(key);
      await Promise.all([this.addTunnel(pair[0], pair[1], vni), this.addTunnel(pair[1], pair[0], vni)]);
    }));
  }

  /** A VXLAN device in `from` whose every frame goes to the relay, and `to`'s address routed over it. */
  private addTunnel(from: NetHost, to: NetHost, vni: number): Promise<string> {
    return ipBatch(from.ns, [
      `link add name d-${to.name} mtu ${tunnelMtu} gso_max_segs 1 type vxlan id ${vni} remote ${this.rootIp} dstport ${vxlanPort} nolearning`,
      `link set d-${to.name} up`,
      `route add ${to.ip}/32 dev d-${to.name} src ${from.ip}`,
    ]);
  }

  async undelay(): Promise<void> {
    const entries = [...this.delayed.values()];
    this.delayed.clear();
    await Promise.all(entries.map(async ({ vni, pair: [x, y] }) => {
      // Deleting a device deletes the route over it: traffic goes back to eth0 and the bridge.
      await Promise.all([ipBatch(x.ns, [`link del d-${y.name}`]), ipBatch(y.ns, [`link del d-${x.name}`])]);
      await this.relay?.command({ op: 'remove', vni });
    }));
  }

  /** Tells the relay a delayed pair's state: its delay, and whether it is also partitioned. */
  private async syncRelay(key: string): Promise<void> {
    const delayed = this.delayed.get(key);
    if (delayed === undefined || this.relay === undefined) return;
    const [x, y] = delayed.pair;
    await this.relay.command({ op: 'set', vni: delayed.vni, ends: [x.ip, y.ip], delayMs: delayed.delayMs, blocked: this.partitioned.has(key) });
  }

  /** The batch that deletes everything: the root link first (its peer lives in the hub), then the namespaces. */
  cleanupScript(): string {
    const namespaces = [...Object.values(this.hosts).map((host) => host.ns), this.hubNs];
    return [`link del ${this.rootLink}`, ...namespaces.map((ns) => `netns del ${ns}`)].join('\n') + '\n';
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.relay?.stop();
    // Some of it may already be gone (a half-built network); -force goes on, and the check below decides.
    await run(cleanupArgv(), this.cleanupScript()).catch(() => undefined);
    live.delete(this);
    const mine = (name: string) => name === this.prefix || name.startsWith(`${this.prefix}-`);
    const left = [...(await listNamespaces()).filter(mine), ...(await listRootLinks()).filter(mine)];
    if (left.length > 0) throw new Error(`network ${this.prefix}: still there after destroy: ${left.join(', ')}`);
  }

  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    this.relay?.stopSync();
    try {
      runSync(cleanupArgv(), this.cleanupScript());
    } catch {
      // Exit path: nothing to report to; removeStaleNetworks() is the backstop.
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Building one.
// ---------------------------------------------------------------------------------------------

function checkNames(hostNames: string[], prefix: string): void {
  if (!prefixPattern.test(prefix)) throw new Error(`network prefix must match ${prefixPattern}, got ${JSON.stringify(prefix)}`);
  if (hostNames.length === 0 || hostNames.length > maxHosts) throw new Error(`a network has 1 to ${maxHosts} hosts, got ${hostNames.length}`);
  for (const name of hostNames) {
    if (!hostNamePattern.test(name)) throw new Error(`host name must match ${hostNamePattern}, got ${JSON.stringify(name)}`);
  }
  if (new Set(hostNames).size !== hostNames.length) throw new Error(`host names repeat: ${hostNames.join(', ')}`);
}

/** The hub namespace with its bridge, and the root namespace's one link to it. */
async function buildHub(network: NetworkImpl): Promise<void> {
  const { ip } = requireTools();
  await run([ip, 'netns', 'add', network.hubNs]);
  // STP is off by default, so a port forwards as soon as it is up.
  await ipBatch(network.hubNs, ['link add name br0 type bridge', 'link set br0 up']);
  await run([ip, 'link', 'add', 'name', network.rootLink, 'type', 'veth', 'peer', 'name', 'up0', 'netns', network.hubNs]);
  await ipBatch(network.hubNs, ['link set up0 master br0', 'link set up0 up']);
  await run([ip, 'link', 'set', network.rootLink, 'up']);
}

/** A host's namespace: `lo` up, eth0 on the bridge with its address, and the qdisc partitions filter into. */
async function addHost(hubNs: string, host: NetHost): Promise<void> {
  const port = `v-${host.name}`;
  await run([requireTools().ip, 'netns', 'add', host.ns]);
  await ipBatch(hubNs, [`link add name ${port} type veth peer name eth0 netns ${host.ns}`, `link set ${port} master br0`, `link set ${port} up`]);
  await Promise.all([
    ipBatch(host.ns, ['link set lo up', `address add ${host.ip}/24 dev eth0`, 'link set eth0 up']),
    tcBatch(host.ns, [
      // htb's default class 0 sends what no filter claims through its direct queue, unshaped;
      // the one class exists only to hold the pfifo that drops what the partition filters send it.
      'qdisc add dev eth0 root handle 1: htb',
      `class add dev eth0 parent 1: classid ${dropClass} htb rate 1mbit`,
      `qdisc add dev eth0 parent ${dropClass} handle 2: pfifo limit 0`,
    ]),
  ]);
}

/** Makes a namespace per host name ([a-z0-9-], at most 8 characters), all joined by a bridge, plus a link to the root namespace. */
export async function createNetwork(hostNames: string[], opts: CreateNetworkOptions = {}): Promise<Network> {
  requireNetns();
  const prefix = opts.prefix ?? defaultPrefix;
  checkNames(hostNames, prefix);
  const seq = networksMade++;
  const name = runName(prefix, process.pid, seq);
  const network = new NetworkImpl(name, name, `${name}-r`);
  if (network.rootLink.length > maxInterfaceName) throw new Error(`link name ${network.rootLink} is longer than ${maxInterfaceName} characters`);
  // Tracked before the first command, so a crash halfway still cleans up what was made.
  live.add(network);
  installExitHooks();
  try {
    await buildHub(network);
    const base = await claimSubnet(network.rootLink, process.pid, seq);
    network.rootIp = `${base}.254`;
    hostNames.forEach((host, index) => {
      network.hosts[host] = { name: host, ns: `${name}-${host}`, ip: `${base}.${index + 1}` };
    });
    await Promise.all(Object.values(network.hosts).map((host) => addHost(network.hubNs, host)));
  } catch (err) {
    await network.destroy().catch(() => undefined);
    throw err;
  }
  return network;
}

/** Removes namespaces and links left by an earlier run that died (by the naming convention and a dead owner pid). */
export async function removeStaleNetworks(opts: CreateNetworkOptions = {}): Promise<void> {
  requireNetns();
  const prefix = opts.prefix ?? defaultPrefix;
  if (!prefixPattern.test(prefix)) throw new Error(`network prefix must match ${prefixPattern}, got ${JSON.stringify(prefix)}`);
  const stale = (name: string): boolean => {
    const pid = ownerPid(name, prefix);
    return pid !== undefined && pid !== process.pid && !isAlive(pid);
  };
  const [namespaces, links] = await Promise.all([listNamespaces(), listRootLinks()]);
  const script = [...links.filter(stale).map((link) => `link del ${link}`), ...namespaces.filter(stale).map((ns) => `netns del ${ns}`)];
  if (script.length === 0) return;
  // Another run may be removing the same leftovers: what it deleted first is not an error.
  await run(cleanupArgv(), `${script.join('\n')}\n`).catch(() => undefined);
  const left = [...(await listNamespaces()), ...(await listRootLinks())].filter(stale);
  if (left.length > 0) throw new Error(`stale network parts still there after removal: ${left.join(', ')}`);
}

// ---------------------------------------------------------------------------------------------
// Prerequisites.
// ---------------------------------------------------------------------------------------------

const privilegeHint = 'in a container, run it with --privileged (or --cap-add NET_ADMIN --cap-add SYS_ADMIN)';
const kernelHint = 'the kernel needs CONFIG_NET_NS, CONFIG_VETH, CONFIG_BRIDGE, CONFIG_VXLAN, CONFIG_NET_SCH_HTB, CONFIG_NET_SCH_FIFO and CONFIG_NET_CLS_U32 (all in the stock Debian kernel)';

/** `name` on PATH, else in /usr/sbin or /sbin (a non-login root shell may lack them on PATH). */
function locate(name: string): string {
  for (const candidate of [name, `/usr/sbin/${name}`, `/sbin/${name}`]) {
    try {
      return requireBinary(name, candidate, installIproute2Command);
    } catch {
      // Next place.
    }
  }
  // Throws, naming the PATH miss and the install command.
  return requireBinary(name, name, installIproute2Command);
}

/** Makes and deletes a throwaway namespace with one of each thing a network uses. */
function probeKernel({ ip, tc }: Tools): void {
  const probe = runName(defaultPrefix, process.pid, 'p');
  const step = (what: string, hint: string, argv: string[], lines?: string[]): void => {
    try {
      runSync(argv, lines === undefined ? undefined : `${lines.join('\n')}\n`);
    } catch (err) {
      throw new MissingPrerequisite(`${what} (${(err as Error).message.trim()}); ${hint}`);
    }
  };
  try {
    step('network namespaces are not permitted here', privilegeHint, [ip, 'netns', 'add', probe]);
    step('the kernel cannot make veth, bridge or vxlan links', kernelHint, [ip, '-n', probe, '-batch', '-'], [
      'link add name v0 type veth peer name v1',
      'link add name br0 type bridge',
      'link set v0 master br0',
      `link add name x0 type vxlan id 1 remote 10.0.0.1 dstport ${vxlanPort} nolearning`,
    ]);
    step('the kernel lacks tc htb, pfifo or u32', kernelHint, [tc, '-n', probe, '-batch', '-'], [
      'qdisc add dev v1 root handle 1: htb',
      `class add dev v1 parent 1: classid ${dropClass} htb rate 1mbit`,
      `qdisc add dev v1 parent ${dropClass} handle 2: pfifo limit 0`,
      `filter add dev v1 parent 1: protocol ip pref 1 u32 match ip dst 10.0.0.1/32 flowid ${dropClass}`,
    ]);
  } finally {
    try {
      runSync([ip, 'netns', 'del', probe]);
    } catch {
      // It was never made (the first step failed).
    }
  }
}

let netnsUsable = false;

/** Throws MissingPrerequisite naming what is missing (not root, no ip or tc, netns not permitted, a kernel feature) and how to get it. */
export function requireNetns(): void {
  if (netnsUsable) return;
  if (process.platform !== 'linux') throw new MissingPrerequisite(`network namespaces need Linux, not ${process.platform}`);
  if (process.getuid?.() !== 0) {
    throw new MissingPrerequisite(`network namespaces need root (uid ${process.getuid?.()}): run as root (CAP_NET_ADMIN and CAP_SYS_ADMIN); ${privilegeHint}`);
  }
  const found = { ip: locate('ip'), tc: locate('tc') };
  probeKernel(found);
  tools = found;
  netnsUsable = true;
}
