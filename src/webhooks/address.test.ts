// The address guard: which IPv4 and IPv6 addresses are public, IPv4 inside IPv6 (mapped,
// NAT64) judged by the IPv4 address, URLs refused before any DNS, host names refused when any
// of their addresses is not public, and the pinned lookup answering only the checked addresses.
import type { LookupAddress } from 'node:dns';
import { describe, expect, it } from 'vitest';
import type { ResolvedAddress, Resolver } from './address.ts';
import { checkWebhookUrl, classifyAddress, pinnedLookup, resolveTarget, systemResolver } from './address.ts';

const isPublic = (ip: string) => classifyAddress(ip).public;

describe('classifyAddress', () => {
  it('refuses every non-public IPv4 range and accepts public unicast', () => {
    const refused = ['0.0.0.0', '0.1.2.3', '10.0.0.1', '10.255.255.255', '100.64.0.1', '100.127.255.254', '127.0.0.1', '127.8.9.10',
      '169.254.169.254', '172.16.0.1', '172.31.255.255', '192.0.0.8', '192.0.2.10', '192.88.99.1', '192.168.1.1', '198.18.0.1', '198.19.255.255',
      '198.51.100.7', '203.0.113.9', '224.0.0.251', '239.255.255.250', '240.0.0.1', '255.255.255.255'];
    for (const ip of refused) expect(isPublic(ip), ip).toBe(false);
    const accepted = ['1.1.1.1', '8.8.8.8', '9.255.255.255', '11.0.0.1', '100.63.255.255', '100.128.0.1', '126.255.255.255', '128.0.0.1',
      '169.253.255.255', '172.15.255.255', '172.32.0.1', '192.0.1.1', '192.167.255.255', '192.169.0.1', '198.17.255.255', '198.20.0.1', '223.255.255.255'];
    for (const ip of accepted) expect(isPublic(ip), ip).toBe(true);
    expect(classifyAddress('169.254.169.254')).toEqual({ public: false, range: 'link-local (169.254.0.0/16)' });
    expect(classifyAddress('0.0.0.0')).toEqual({ public: false, range: 'unspecified' });
  });

  it('refuses every non-public IPv6 range and accepts global unicast', () => {
    const refused = ['::', '::1', '[::1]', 'fc00::1', 'fd12:3456:789a::1', 'fe80::1', 'fe80::1%eth0', 'febf::1', 'fec0::1', 'ff02::1', 'ff05::1:3',
      '2001:db8::1', '2001::1', '2001:0:4136:e378:8000:63bf:3fff:fdd2', '2002:c000:0204::1', '3fff::1', '100::1', '::2', '1::1', '64:ff9b:1::1'];
    for (const ip of refused) expect(isPublic(ip), ip).toBe(false);
    for (const ip of ['2606:4700:4700::1111', '2a00:1450:4001:80b::200e', '2001:4860:4860::8888', '2001:200::1', '[2606:4700::6810:84e5]']) {
      expect(isPublic(ip), ip).toBe(true);
    }
    expect(classifyAddress('fe80::1')).toEqual({ public: false, range: 'link-local (fe80::/10)' });
    expect(classifyAddress('fd00::1')).toEqual({ public: false, range: 'unique local (fc00::/7)' });
  });

  it('judges IPv4-mapped and NAT64 IPv6 addresses by the IPv4 address inside, in either notation', () => {
    for (const ip of ['::ffff:127.0.0.1', '::ffff:7f00:1', '::FFFF:10.0.0.1', '::ffff:a9fe:a9fe', '::ffff:192.168.0.1', '::ffff:0.0.0.0', '64:ff9b::127.0.0.1', '64:ff9b::a00:1']) {
      expect(isPublic(ip), ip).toBe(false);
    }
    for (const ip of ['::ffff:8.8.8.8', '::ffff:808:808', '64:ff9b::1.1.1.1']) expect(isPublic(ip), ip).toBe(true);
    expect(classifyAddress('::ffff:7f00:1')).toEqual({ public: false, range: 'loopback (127.0.0.0/8)' });
    // IPv4-compatible (deprecated, ::a.b.c.d) is not global unicast whatever it embeds.
    expect(isPublic('::8.8.8.8')).toBe(false);
  });

  it('refuses what is not an IP address', () => {
    expect(classifyAddress('example.com')).toEqual({ public: false, range: 'not an IP address' });
    expect(isPublic('1.2.3')).toBe(false);
  });
});

describe('checkWebhookUrl', () => {
  const strict = { allowPrivate: false };
  const reason = (raw: string, opts = strict) => {
    const c = checkWebhookUrl(raw, opts);
    return c.ok ? 'ok' : c.reason;
  };

  it('takes https URLs with public or unresolved hosts', () => {
    expect(reason('https://hooks.example.com/geopay?x=1')).toBe('ok');
    expect(reason('https://8.8.8.8:8443/in')).toBe('ok');
    expect(reason('https://[2606:4700:4700::1111]/in')).toBe('ok');
  });

  it('refuses other schemes, plain http, credentials, garbage and over-long URLs', () => {
    expect(reason('ftp://example.com/')).toBe('unsupported_scheme');
    expect(reason('file:///etc/passwd')).toBe('unsupported_scheme');
    expect(reason('javascript:alert(1)')).toBe('unsupported_scheme');
    expect(reason('http://example.com/')).toBe('https_required');
    expect(reason('https://user:pw@example.com/')).toBe('credentials_in_url');
    expect(reason('not a url')).toBe('invalid_url');
    expect(reason(`https://example.com/${'a'.repeat(2048)}`)).toBe('invalid_url');
  });

  it('refuses IP literals that are not public, in every spelling the URL parser normalizes', () => {
    for (const raw of ['https://127.0.0.1/', 'https://0x7f.1/', 'https://2130706433/', 'https://0177.0.0.1/', 'https://127.1/', 'https://[::1]/',
      'https://[::ffff:127.0.0.1]/', 'https://[::ffff:7f00:1]/', 'https://169.254.169.254/latest/meta-data', 'https://[fe80::1]/', 'https://0/', 'https://[fd00::1]/']) {
      expect(reason(raw), raw).toBe('address_not_public');
    }
  });

  it('lets http and private literals through with allowPrivate', () => {
    expect(reason('http://127.0.0.1:8080/hook', { allowPrivate: true })).toBe('ok');
    expect(reason('ftp://127.0.0.1/', { allowPrivate: true })).toBe('unsupported_scheme');
  });
});

describe('resolveTarget', () => {
  const fixed = (answers: Record<string, ResolvedAddress[]>): Resolver => async (host) => {
    const a = answers[host];
    if (!a) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return a;
  };
  const resolve = fixed({
    'public.example': [{ address: '93.184.216.34', family: 4 }, { address: '2606:2800:220:1:248:1893:25c8:1946', family: 6 }],
    'internal.example': [{ address: '10.1.2.3', family: 4 }],
    'mixed.example': [{ address: '93.184.216.34', family: 4 }, { address: '127.0.0.1', family: 4 }],
    'v6-local.example': [{ address: '93.184.216.34', family: 4 }, { address: 'fd00::5', family: 6 }],
    'mapped.example': [{ address: '::ffff:169.254.169.254', family: 6 }],
    'empty.example': [],
  });
  const target = (host: string, allowPrivate = false) => resolveTarget(new URL(`https://${host}/hook`), { allowPrivate, resolve });

  it('returns every address of a public name', async () => {
    expect(await target('public.example')).toEqual({ ok: true, addresses: [{ address: '93.184.216.34', family: 4 }, { address: '2606:2800:220:1:248:1893:25c8:1946', family: 6 }] });
  });

  it('refuses a name when any one of its addresses is not public', async () => {
    for (const host of ['internal.example', 'mixed.example', 'v6-local.example', 'mapped.example']) {
      expect(await target(host), host).toMatchObject({ ok: false, reason: 'address_not_public' });
    }
    expect(await target('mixed.example')).toEqual({ ok: false, reason: 'address_not_public', detail: 'mixed.example resolves to 127.0.0.1, loopback (127.0.0.0/8)' });
  });

  it('refuses names that do not resolve', async () => {
    expect(await target('nowhere.example')).toMatchObject({ ok: false, reason: 'unresolvable' });
    expect(await target('empty.example')).toMatchObject({ ok: false, reason: 'unresolvable' });
  });

  it('takes IP literals without DNS, and private names with allowPrivate', async () => {
    expect(await target('[2606:4700::1]')).toEqual({ ok: true, addresses: [{ address: '2606:4700::1', family: 6 }] });
    expect(await target('127.0.0.1')).toMatchObject({ ok: false, reason: 'address_not_public' });
    expect(await target('internal.example', true)).toEqual({ ok: true, addresses: [{ address: '10.1.2.3', family: 4 }] });
  });

  it('refuses localhost through the system resolver', async () => {
    expect(await resolveTarget(new URL('https://localhost/'), { allowPrivate: false, resolve: systemResolver })).toMatchObject({ ok: false, reason: 'address_not_public' });
  });
});

describe('pinnedLookup', () => {
  const addresses: ResolvedAddress[] = [{ address: '93.184.216.34', family: 4 }, { address: '2606:2800:220:1::1', family: 6 }];
  const ask = (host: string, options: object) => new Promise<{ err: Error | null; address: string | LookupAddress[]; family?: number }>((resolve) => {
    pinnedLookup('public.example', addresses)(host, options, (err, address, family) => resolve({ err, address, family }));
  });

  it('answers the checked addresses, all of them or one of the family asked for', async () => {
    expect(await ask('public.example', { all: true })).toEqual({ err: null, address: addresses, family: undefined });
    expect(await ask('public.example', {})).toEqual({ err: null, address: '93.184.216.34', family: 4 });
    expect(await ask('public.example', { family: 6 })).toEqual({ err: null, address: '2606:2800:220:1::1', family: 6 });
    expect(await ask('public.example', { family: 'IPv6', all: true })).toEqual({ err: null, address: [addresses[1]], family: undefined });
  });

  it('refuses any other name', async () => {
    const r = await ask('evil.example', {});
    expect(r.err?.message).toMatch(/pinned to public\.example/);
  });
});
