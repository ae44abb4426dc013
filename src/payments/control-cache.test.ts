// The control-plane cache alone, on a virtual clock: the staleness bound, stale-if-error within
// the grace and not past it, one read per key, the pause after a failure, a slow read, forget.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { GeopayError } from '../domain/errors.ts';
import { ControlCache, ControlPlaneHealth, RECHECK_AFTER_FAILURE_MS, REVALIDATE_WAIT_MS } from './control-cache.ts';

const CACHE_MS = 1_000;
const GRACE_MS = 10_000;

function setup(over: { outageGraceMs?: number; maxEntries?: number } = {}) {
  const time = { now: 0 };
  const cache = new ControlCache<string>(
    { cacheMs: CACHE_MS, outageGraceMs: over.outageGraceMs ?? GRACE_MS, maxEntries: over.maxEntries ?? 100, clock: () => time.now },
    new ControlPlaneHealth(pino({ level: 'silent' })),
  );
  const reads: string[] = [];
  const answer = (value: string) => async () => { reads.push(value); return value; };
  const down = async (): Promise<string> => { reads.push('down'); throw new GeopayError('control_plane_unavailable', undefined, { cause: new Error('refused') }); };
  return { time, cache, reads, answer, down, get: (key: string, read: () => Promise<string>) => cache.get(key, time.now, read) };
}

const code = (p: Promise<unknown>) => p.then(() => 'answered', (err: unknown) => (err instanceof GeopayError ? err.code : String(err)));

describe('ControlCache', () => {
  it('answers from memory within the bound and reads again past it', async () => {
    const c = setup();
    expect(await c.get('k', c.answer('v1'))).toBe('v1');
    c.time.now = CACHE_MS;
    expect(await c.get('k', c.answer('v2'))).toBe('v1');
    c.time.now = CACHE_MS + 1;
    expect(await c.get('k', c.answer('v2'))).toBe('v2');
    expect(c.reads).toEqual(['v1', 'v2']);
  });

  it('answers the last value read while the control plane is down, within the grace only', async () => {
    const c = setup();
    await c.get('k', c.answer('v1'));
    c.time.now = CACHE_MS + 1;
    expect(await c.get('k', c.down)).toBe('v1');
    // Right after a failure nothing is read: the value answers at once.
    c.time.now += RECHECK_AFTER_FAILURE_MS - 1;
    expect(await c.get('k', c.down)).toBe('v1');
    expect(c.reads).toEqual(['v1', 'down']);
    c.time.now = CACHE_MS + GRACE_MS;
    expect(await c.get('k', c.down)).toBe('v1');
    c.time.now = CACHE_MS + GRACE_MS + 1;
    expect(await code(c.get('k', c.down))).toBe('control_plane_unavailable');
  });

  it('with no grace, a value past its bound is never used', async () => {
    const c = setup({ outageGraceMs: 0 });
    await c.get('k', c.answer('v1'));
    c.time.now = CACHE_MS + 1;
    expect(await code(c.get('k', c.down))).toBe('control_plane_unavailable');
  });

  it('never remembers a failure as an answer; after one it refuses unseen keys without a read until the pause is over', async () => {
    const c = setup();
    expect(await code(c.get('unseen', c.down))).toBe('control_plane_unavailable');
    expect(await code(c.get('other', c.answer('x')))).toBe('control_plane_unavailable');
    expect(c.reads).toEqual(['down']);
    c.time.now = RECHECK_AFTER_FAILURE_MS;
    expect(await c.get('unseen', c.answer('v'))).toBe('v');
    expect(await c.get('other', c.answer('x'))).toBe('x');
  });

  it('lets a bug through, also with a value in its grace', async () => {
    const c = setup();
    await c.get('k', c.answer('v1'));
    c.time.now = CACHE_MS + 1;
    expect(await code(c.get('k', async () => { throw new TypeError('bug'); }))).toBe('TypeError: bug');
  });

  it('reads once for every caller, and answers a value in its grace when the read is slow; the read still lands', async () => {
    const c = setup();
    await c.get('k', c.answer('v1'));
    c.time.now = CACHE_MS + 1;
    let finish: (v: string) => void = () => undefined;
    const slow = () => new Promise<string>((resolve) => { c.reads.push('slow'); finish = resolve; });
    const started = Date.now();
    const [first, second] = await Promise.all([c.get('k', slow), c.get('k', slow)]);
    expect([first, second]).toEqual(['v1', 'v1']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(REVALIDATE_WAIT_MS - 50);
    expect(c.reads).toEqual(['v1', 'slow']);
    finish('v2');
    await new Promise((r) => setImmediate(r));
    expect(await c.get('k', c.answer('v3'))).toBe('v2');
  });

  it('forgets at once what forget selects, and a read begun before it does not bring it back', async () => {
    const c = setup();
    await c.get('a', c.answer('revoked'));
    await c.get('b', c.answer('kept'));
    c.time.now = CACHE_MS + 1;
    let finish: (v: string) => void = () => undefined;
    const inFlight = c.get('b', () => new Promise<string>((resolve) => { finish = resolve; }));
    c.cache.forget((_key, value) => value === 'revoked' || value === 'kept');
    finish('read before the forget');
    // The read answers its own caller (it began before), but is not kept.
    expect(await inFlight).toBe('read before the forget');
    expect(await c.get('a', c.answer('a again'))).toBe('a again');
    expect(await c.get('b', c.answer('b again'))).toBe('b again');
  });

  it('when full, drops the value read longest ago', async () => {
    const c = setup({ maxEntries: 2 });
    await c.get('a', c.answer('a'));
    await c.get('b', c.answer('b'));
    await c.get('c', c.answer('c'));
    expect(await c.get('b', c.answer('b2'))).toBe('b');
    expect(await c.get('a', c.answer('a2'))).toBe('a2');
  });
});
