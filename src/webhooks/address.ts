// Where a delivery may go (server-side request forgery, the spec's "SSRF" section): an http(s)
// URL whose host resolves only to public unicast addresses. Every address of the name is
// checked, and the connection is then pinned to those checked addresses (pinnedLookup), so a
// second DNS answer (rebinding) cannot send it elsewhere; Host and SNI keep the name. https is
// required unless allowPrivate (WEBHOOK_ALLOW_PRIVATE, for tests and development), which also
// lets loopback and private addresses through.
import assert from 'node:assert/strict';
import { lookup as dnsLookup } from 'node:dns/promises';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { isIP, isIPv4, isIPv6 } from 'node:net';

export interface ResolvedAddress { address: string; family: 4 | 6 }
/** Every address of a name (dns.lookup with all: true); injectable for tests. */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemResolver: Resolver = async (hostname) =>
  (await dnsLookup(hostname, { all: true, verbatim: true })).map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));

export type AddressClass = { public: true } | { public: false; range: string };

type Range4 = readonly [base: number, prefix: number, label: string];
const v4 = (dotted: string, prefix: number, label: string): Range4 => [ipv4Number(dotted), prefix, label];

/** IANA's IPv4 special-purpose registry, every entry not globally reachable, and multicast. */
const V4_RANGES: readonly Range4[] = [
  v4('0.0.0.0', 32, 'unspecified'),
  v4('0.0.0.0', 8, 'this network (0.0.0.0/8)'),
  v4('10.0.0.0', 8, 'private (10.0.0.0/8)'),
  v4('100.64.0.0', 10, 'carrier-grade NAT (100.64.0.0/10)'),
  v4('127.0.0.0', 8, 'loopback (127.0.0.0/8)'),
  v4('169.254.0.0', 16, 'link-local (169.254.0.0/16)'),
  v4('172.16.0.0', 12, 'private (172.16.0.0/12)'),
  v4('192.0.0.0', 24, 'IETF protocol assignments (192.0.0.0/24)'),
  v4('192.0.2.0', 24, 'documentation (192.0.2.0/24)'),
  v4('192.88.99.0', 24, '6to4 relay anycast (192.88.99.0/24)'),
  v4('192.168.0.0', 16, 'private (192.168.0.0/16)'),
  v4('198.18.0.0', 15, 'benchmarking (198.18.0.0/15)'),
  v4('198.51.100.0', 24, 'documentation (198.51.100.0/24)'),
  v4('203.0.113.0', 24, 'documentation (203.0.113.0/24)'),
  v4('224.0.0.0', 4, 'multicast (224.0.0.0/4)'),
  v4('240.0.0.0', 4, 'reserved (240.0.0.0/4, broadcast)'),
];

function ipv4Number(dotted: string): number {
  const parts = dotted.split('.').map(Number);
  assert.ok(parts.length === 4 && parts.every((p) => Number.isInteger(p) && p >= 0 && p <= 255), 'a dotted IPv4 address');
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

function classify4(n: number): AddressClass {
  for (const [base, prefix, label] of V4_RANGES) {
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    if (((n & mask) >>> 0) === base) return { public: false, range: label };
  }
  return { public: true };
}

/** The 16 bytes of a valid IPv6 text (zone id already removed), dotted IPv4 tail included. */
function ipv6Bytes(text: string): Uint8Array {
  let s = text;
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) > 0) {
    const n = ipv4Number(s.slice(lastColon + 1));
    s = `${s.slice(0, lastColon + 1)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  const groups = (part: string | undefined) => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const head = groups(halves[0]);
  const tail = groups(halves[1]);
  const all = halves.length === 2 ? [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail] : head;
  assert.ok(all.length === 8, 'eight IPv6 groups');
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => { bytes[2 * i] = g >> 8; bytes[2 * i + 1] = g & 0xff; });
  return bytes;
}

type Range6 = readonly [prefixBytes: readonly number[], prefix: number, label: string];

/** IPv6 blocks inside global unicast (2000::/3) that are still not publicly routable. */
const V6_SPECIAL: readonly Range6[] = [
  [[0x20, 0x01, 0x0d, 0xb8], 32, 'documentation (2001:db8::/32)'],
  [[0x20, 0x01, 0x00], 23, 'IETF protocol assignments (2001::/23, Teredo included)'],
  // 6to4 (RFC 7526 deprecates it) would reach whatever IPv4 address it embeds.
  [[0x20, 0x02], 16, '6to4 (2002::/16)'],
  [[0x3f, 0xff, 0x00], 20, 'documentation (3fff::/20)'],
];

function inPrefix(bytes: Uint8Array, prefixBytes: readonly number[], prefix: number): boolean {
  for (let bit = 0; bit < prefix; bit++) {
    const mask = 0x80 >> bit % 8;
    if ((bytes[bit >> 3]! & mask) !== ((prefixBytes[bit >> 3] ?? 0) & mask)) return false;
  }
  return true;
}

const embedded4 = (b: Uint8Array): number => ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;

function classify6(b: Uint8Array): AddressClass {
  // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach the IPv4 address inside.
  if (inPrefix(b, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff], 96)) return classify4(embedded4(b));
  if (inPrefix(b, [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0], 96)) return classify4(embedded4(b));
  if (b.every((x) => x === 0)) return { public: false, range: 'unspecified (::)' };
  if (b.slice(0, 15).every((x) => x === 0) && b[15] === 1) return { public: false, range: 'loopback (::1)' };
  if (inPrefix(b, [0xfc], 7)) return { public: false, range: 'unique local (fc00::/7)' };
  if (inPrefix(b, [0xfe, 0x80], 10)) return { public: false, range: 'link-local (fe80::/10)' };
  if (inPrefix(b, [0xff], 8)) return { public: false, range: 'multicast (ff00::/8)' };
  if (!inPrefix(b, [0x20], 3)) return { public: false, range: 'not global unicast (outside 2000::/3)' };
  for (const [prefixBytes, prefix, label] of V6_SPECIAL) if (inPrefix(b, prefixBytes, prefix)) return { public: false, range: label };
  return { public: true };
}

/** Whether an IP address (v4 or v6 text, `[...]` and a zone id allowed) is public unicast. */
export function classifyAddress(ip: string): AddressClass {
  const bare = ip.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '');
  if (isIPv4(bare)) return classify4(ipv4Number(bare));
  if (isIPv6(bare)) return classify6(ipv6Bytes(bare));
  return { public: false, range: 'not an IP address' };
}

export type UrlRefusal = 'invalid_url' | 'unsupported_scheme' | 'https_required' | 'credentials_in_url' | 'address_not_public';
export type UrlCheck = { ok: true; url: URL } | { ok: false; reason: UrlRefusal; detail: string };

const MAX_URL_LENGTH = 2048;

/**
 * The checks that need no DNS, for endpoint creation and before every attempt. The WHATWG
 * parser has already turned 0x7f.1, 2130706433 and the like into dotted IPv4.
 */
export function checkWebhookUrl(raw: string, opts: { allowPrivate: boolean }): UrlCheck {
  if (raw.length > MAX_URL_LENGTH || !URL.canParse(raw)) return { ok: false, reason: 'invalid_url', detail: 'not an absolute URL of at most 2048 characters' };
  const url = new URL(raw);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return { ok: false, reason: 'unsupported_scheme', detail: `scheme ${url.protocol} is not http(s)` };
  if (url.protocol === 'http:' && !opts.allowPrivate) return { ok: false, reason: 'https_required', detail: 'webhook URLs must be https' };
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'credentials_in_url', detail: 'a webhook URL carries no user or password' };
  const host = hostOf(url);
  if (isIP(host) !== 0 && !opts.allowPrivate) {
    const c = classifyAddress(host);
    if (!c.public) return { ok: false, reason: 'address_not_public', detail: `${host} is ${c.range}` };
  }
  return { ok: true, url };
}

/** The URL's host as DNS or an IP literal (IPv6 without its brackets). */
export const hostOf = (url: URL): string => url.hostname.replace(/^\[(.*)\]$/, '$1');

export type TargetRefusal = 'unresolvable' | 'address_not_public';
export type Target = { ok: true; addresses: ResolvedAddress[] } | { ok: false; reason: TargetRefusal; detail: string };

/** The addresses a delivery to `url` may connect to: all of the host's, each one checked. */
export async function resolveTarget(url: URL, opts: { allowPrivate: boolean; resolve: Resolver }): Promise<Target> {
  const host = hostOf(url);
  const family = isIP(host);
  let addresses: ResolvedAddress[];
  if (family !== 0) {
    addresses = [{ address: host, family: family === 6 ? 6 : 4 }];
  } else {
    try {
      addresses = await opts.resolve(host);
    } catch (err) {
      return { ok: false, reason: 'unresolvable', detail: `${host}: ${(err as Error).message}` };
    }
    if (addresses.length === 0) return { ok: false, reason: 'unresolvable', detail: `${host}: no address` };
  }
  if (!opts.allowPrivate) {
    for (const a of addresses) {
      const c = classifyAddress(a.address);
      if (!c.public) return { ok: false, reason: 'address_not_public', detail: `${host} resolves to ${a.address}, ${c.range}` };
    }
  }
  return { ok: true, addresses };
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for net/tls.connect (undici's `connect` option) that answers only the checked
 * addresses of the checked host: the socket goes where the guard looked, never to a fresh answer.
 */
export function pinnedLookup(host: string, addresses: readonly ResolvedAddress[]) {
  assert.ok(addresses.length > 0, 'at least one checked address');
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    if (hostname.replace(/^\[(.*)\]$/, '$1') !== host) {
      callback(Object.assign(new Error(`lookup of ${hostname}, pinned to ${host}`), { code: 'ENOTFOUND' }), '');
      return;
    }
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family;
    const wanted = addresses.filter((a) => !family || family === a.family);
    const chosen = wanted.length > 0 ? wanted : addresses;
    if (options.all) callback(null, chosen.map((a) => ({ address: a.address, family: a.family })));
    else callback(null, chosen[0]!.address, chosen[0]!.family);
  };
}
