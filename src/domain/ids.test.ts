// Ids are built only by validating parsers and carry their routing facts (region, shard):
// account, transfer and hold ids name their home region, read back by one parser each.
// The shard hash is pinned to published FNV-1a vectors: changing it would move every
// account to another shard, so a change must fail here first.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  externalAccountId, isExternal, makeAccountId, makeHoldId, makeTenantId, makeTransferId, parseAccountId, parseHoldId,
  makeShardId, parseRegion, parseShardId, parseTenantId, parseTransferId, regionOf, regionOfHold, regionOfTransfer,
  shardOf, shardParts, uuidv7Hex, uuidv8Hex,
  type AccountId, type HoldId, type Region, type TransferId,
} from './ids.ts';

// Fixed "random" bytes keep the tests deterministic; the domain takes randomness as input.
const rnd = (fill: number): Uint8Array => new Uint8Array(10).fill(fill);
const T0 = Date.UTC(2025, 0, 1);

function region(raw: string): Region {
  const r = parseRegion(raw);
  if (r === undefined) throw new Error(`test setup: bad region ${raw}`);
  return r;
}

function accountId(raw: string): AccountId {
  const id = parseAccountId(raw);
  if (id === undefined) throw new Error(`test setup: bad account id ${raw}`);
  return id;
}

/** Reference FNV-1a (32 bit) on bigints, independent of the Math.imul version under test. */
function fnv1a32(s: string): number {
  let h = 0x811c9dc5n;
  for (let i = 0; i < s.length; i++) {
    h ^= BigInt(s.charCodeAt(i));
    h = (h * 0x01000193n) & 0xffffffffn;
  }
  return Number(h);
}

describe('parseRegion', () => {
  it.each(['eu', 'us-east', 'ap-southeast-1', 'a', 'a234567890123456'])('accepts %j', (raw) => {
    expect(parseRegion(raw)).toBe(raw);
  });
  it.each(['', 'EU', '1eu', '-eu', 'eu_west', 'eu west', 'a2345678901234567', 42, null])('rejects %j', (raw) => {
    expect(parseRegion(raw)).toBeUndefined();
  });
});

describe('generated ids parse back', () => {
  const hex = uuidv7Hex(T0, rnd(0xab));

  it('account, transfer, hold and tenant ids', () => {
    const acc = makeAccountId(region('eu-west'), hex);
    expect(parseAccountId(acc)).toBe(acc);
    const tr = makeTransferId(region('eu-west'), hex);
    expect(tr).toBe(`tr_eu-west_${hex}`);
    expect(parseTransferId(tr)).toBe(tr);
    const hold = makeHoldId(region('us'), hex);
    expect(hold).toBe(`hold_us_${hex}`);
    expect(parseHoldId(hold)).toBe(hold);
    const ten = makeTenantId(hex);
    expect(parseTenantId(ten)).toBe(ten);
  });

  it('external account ids', () => {
    const ext = externalAccountId(region('us'), 'USD');
    expect(ext).toBe('ext_us_USD');
    expect(parseAccountId(ext)).toBe(ext);
    expect(isExternal(ext)).toBe(true);
    expect(isExternal(makeAccountId(region('us'), hex))).toBe(false);
  });

  it('for any time and randomness (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 48 - 1 }),
        fc.uint8Array({ minLength: 10, maxLength: 10 }),
        fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/),
        (ms, random, reg) => {
          const h = uuidv7Hex(ms, random);
          const acc = makeAccountId(region(reg), h);
          expect(parseAccountId(acc)).toBe(acc);
          expect(regionOf(acc)).toBe(reg);
          const tr = makeTransferId(region(reg), h);
          expect(parseTransferId(tr)).toBe(`tr_${reg}_${h}`);
          expect(regionOfTransfer(tr)).toBe(reg);
          const hold = makeHoldId(region(reg), h);
          expect(parseHoldId(hold)).toBe(`hold_${reg}_${h}`);
          expect(regionOfHold(hold)).toBe(reg);
          expect(parseTenantId(makeTenantId(h))).toBe(`ten_${h}`);
        },
      ),
    );
  });
});

describe('parsers reject malformed ids', () => {
  const hex = '0'.repeat(32);

  it.each([
    '', 'acc', `acc__${hex}`, `acc_EU_${hex}`, `acc_1eu_${hex}`, `acc_eu_${hex.slice(1)}`, `acc_eu_${hex}0`,
    `acc_eu_${'A'.repeat(32)}`, `acc_eu_${'g'.repeat(32)}`, `acc_eu-${hex}`, ` acc_eu_${hex}`, `acc_eu_${hex}\n`,
    `tr_${hex}`, `ten_${hex}`, `acc_${'a'.repeat(17)}_${hex}`,
    'ext_us_usd', 'ext_us_XXX', 'ext_us_US', 'ext_US_USD', 'ext__USD', 'ext_us_USD_', 'ext_us_toString',
  ])('account id %j', (raw) => {
    expect(parseAccountId(raw)).toBeUndefined();
  });

  // The region-less forms of before regions owned their data are refused like any other.
  it.each([
    '', 'tr_', 'tr_eu_', `tr_${hex}`, `tr_eu_${hex.slice(1)}`, `tr_eu_${hex}0`, `tr_eu_${'A'.repeat(32)}`, `TR_eu_${hex}`,
    `tr__${hex}`, `tr_EU_${hex}`, `tr_1eu_${hex}`, `tr_-eu_${hex}`, `tr_eu_west_${hex}`, `tr_eu west_${hex}`,
    `tr_${'a'.repeat(17)}_${hex}`, `tr_eu-${hex}`, ` tr_eu_${hex}`, `tr_eu_${hex}\n`,
    `hold_eu_${hex}`, `ten_${hex}`, `acc_eu_${hex}`,
  ])('transfer id %j', (raw) => {
    expect(parseTransferId(raw)).toBeUndefined();
  });

  it.each([
    '', 'hold_', 'hold_eu_', `hold_${hex}`, `hold_eu_${hex.slice(1)}`, `hold_eu_${hex}0`, `hold_eu_${'F'.repeat(32)}`,
    `HOLD_eu_${hex}`, `hold__${hex}`, `hold_EU_${hex}`, `hold_9eu_${hex}`, `hold_-eu_${hex}`, `hold_eu_west_${hex}`,
    `hold_${'a'.repeat(17)}_${hex}`, `hold_eu_${hex}\n`, `tr_eu_${hex}`, `acc_eu_${hex}`,
  ])('hold id %j', (raw) => {
    expect(parseHoldId(raw)).toBeUndefined();
  });

  it.each(['', 'ten_', `ten_${hex.slice(1)}`, `ten_${'F'.repeat(32)}`, `tr_${hex}`])('tenant id %j', (raw) => {
    expect(parseTenantId(raw)).toBeUndefined();
  });

  it.each([[42], [null], [undefined], [{}], [[`tr_${'0'.repeat(32)}`]]])('non-strings %j', (raw) => {
    expect(parseAccountId(raw)).toBeUndefined();
    expect(parseTransferId(raw)).toBeUndefined();
    expect(parseHoldId(raw)).toBeUndefined();
    expect(parseTenantId(raw)).toBeUndefined();
  });
});

describe('transfer and hold ids carry their home region', () => {
  const hex = uuidv7Hex(T0, rnd(0x5a));

  it('reads the region back off either kind, the longest region included', () => {
    expect(regionOfTransfer(makeTransferId(region('ap-southeast-1'), hex))).toBe('ap-southeast-1');
    expect(regionOfHold(makeHoldId(region('a234567890123456'), hex))).toBe('a234567890123456');
    expect(regionOfTransfer(parseTransferId(`tr_eu_${'0'.repeat(32)}`)!)).toBe('eu');
    expect(regionOfHold(parseHoldId(`hold_us-east_${'f'.repeat(32)}`)!)).toBe('us-east');
  });

  it('takes a name-based hex as it takes a UUIDv7 one', () => {
    const named = uuidv8Hex(new Uint8Array(16).fill(0xee));
    expect(parseTransferId(makeTransferId(region('eu'), named))).toBe(`tr_eu_${named}`);
    expect(parseHoldId(makeHoldId(region('eu'), named))).toBe(`hold_eu_${named}`);
  });

  it('is the same hex in two regions, yet two different ids', () => {
    expect(makeTransferId(region('eu'), hex)).not.toBe(makeTransferId(region('us'), hex));
    expect(makeHoldId(region('eu'), hex)).not.toBe(makeHoldId(region('us'), hex));
  });

  it('refuses to make an id its parser would refuse (a caller bug, not user input)', () => {
    for (const bad of ['', hex.slice(1), `${hex}0`, hex.toUpperCase(), `${'g'.repeat(32)}`]) {
      expect(() => makeTransferId(region('eu'), bad), bad).toThrow();
      expect(() => makeHoldId(region('eu'), bad), bad).toThrow();
    }
    for (const bad of ['EU', 'eu_west', '', '1eu']) {
      expect(() => makeTransferId(bad as Region, hex), bad).toThrow();
      expect(() => makeHoldId(bad as Region, hex), bad).toThrow();
    }
  });

  it('the region readers refuse an id of another kind or of the old form', () => {
    expect(() => regionOfTransfer(`tr_${hex}` as TransferId)).toThrow();
    expect(() => regionOfTransfer(`hold_eu_${hex}` as TransferId)).toThrow();
    expect(() => regionOfHold(`hold_${hex}` as HoldId)).toThrow();
    expect(() => regionOfHold(`tr_eu_${hex}` as HoldId)).toThrow();
  });
});

describe('regionOf', () => {
  it('reads the region off customer and external ids', () => {
    expect(regionOf(accountId(`acc_eu-west_${'1'.repeat(32)}`))).toBe('eu-west');
    expect(regionOf(accountId('ext_ap-southeast-1_JPY'))).toBe('ap-southeast-1');
    expect(regionOf(accountId(`acc_a234567890123456_${'f'.repeat(32)}`))).toBe('a234567890123456');
  });
});

describe('shardOf', () => {
  const ids = [
    accountId(`acc_eu_${'0'.repeat(32)}`),
    accountId(`acc_eu_${uuidv7Hex(T0, rnd(1))}`),
    accountId(`acc_us-east_${uuidv7Hex(T0 + 1, rnd(2))}`),
    accountId('ext_eu_EUR'),
  ];

  it('the reference hash matches published FNV-1a vectors', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
  });

  it('is FNV-1a of the id, prefixed by the region', () => {
    for (const id of ids) {
      expect(shardOf(id, 2 ** 32)).toBe(`${regionOf(id)}/${fnv1a32(id)}`);
      expect(shardOf(id, 64)).toBe(`${regionOf(id)}/${fnv1a32(id) % 64}`);
    }
  });

  it('is stable across calls', () => {
    for (const id of ids) expect(shardOf(id, 16)).toBe(shardOf(id, 16));
  });

  it('stays within [0, buckets) and in the id\'s region (property)', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/),
        fc.stringMatching(/^[0-9a-f]{32}$/),
        fc.integer({ min: 1, max: 10_000 }),
        (reg, hex, buckets) => {
          const id = makeAccountId(region(reg), hex);
          const shard = shardOf(id, buckets);
          const m = /^(.+)\/(\d+)$/.exec(shard);
          expect(m).not.toBeNull();
          expect(m![1]).toBe(reg);
          const bucket = Number(m![2]);
          expect(Number.isInteger(bucket)).toBe(true);
          expect(bucket).toBeGreaterThanOrEqual(0);
          expect(bucket).toBeLessThan(buckets);
          expect(bucket).toBe(fnv1a32(id) % buckets);
        },
      ),
    );
  });

  it('spreads realistic ids evenly over the buckets', () => {
    // Realistic means random bytes as the app generates them (here from a seeded xorshift so
    // the test is deterministic). FNV-1a's low bits are a weak mix (bit 0 is the parity of
    // the characters' low bits), so ids with hand-made, mostly constant bytes do not spread:
    // the spread comes from the 74 random bits of the UUIDv7.
    let x = 0x9e3779b9;
    const next = (): number => {
      x ^= x << 13; x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5; x >>>= 0;
      return x & 0xff;
    };
    for (const buckets of [8, 7, 64]) {
      const n = 200 * buckets;
      const counts = new Array<number>(buckets).fill(0);
      for (let i = 0; i < n; i++) {
        const random = Uint8Array.from({ length: 10 }, next);
        const id = makeAccountId(region('eu'), uuidv7Hex(T0 + i, random));
        counts[Number(shardOf(id, buckets).split('/')[1])]! += 1;
      }
      // 200 expected per bucket; 6 standard deviations (~14 each) either side.
      for (const c of counts) {
        expect(c).toBeGreaterThan(115);
        expect(c).toBeLessThan(285);
      }
    }
  });
});

describe('uuidv7Hex', () => {
  it('lays out 48 bits of milliseconds, version 7 and variant 10', () => {
    const ms = 0x0123456789ab;
    const h = uuidv7Hex(ms, rnd(0xff));
    expect(h).toMatch(/^[0-9a-f]{32}$/);
    expect(h.slice(0, 12)).toBe('0123456789ab');
    expect(h[12]).toBe('7'); // version nibble
    expect(parseInt(h[16]!, 16) >> 2).toBe(0b10); // variant bits
    // All-ones randomness shows through everywhere the version/variant do not mask it.
    expect(h).toBe('0123456789ab7fffbfffffffffffffff');
  });

  it('keeps the randomness and masks only version and variant bits', () => {
    const random = Uint8Array.from([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99]);
    expect(uuidv7Hex(0, random)).toBe('000000000000' + '7011' + 'a233' + '445566778899');
    expect(uuidv7Hex(0, new Uint8Array(10))).toBe('000000000000' + '7000' + '8000' + '000000000000');
  });

  it('has version 7 and variant 10 for any input (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.uint8Array({ minLength: 10, maxLength: 10 }), (ms, r) => {
        const h = uuidv7Hex(ms, r);
        expect(h).toMatch(/^[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}$/);
        expect(parseInt(h.slice(0, 12), 16)).toBe(ms);
      }),
    );
  });

  it('sorts by time for increasing milliseconds, whatever the randomness', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 48 - 2 }),
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.uint8Array({ minLength: 10, maxLength: 10 }),
        fc.uint8Array({ minLength: 10, maxLength: 10 }),
        (ms, step, r1, r2) => {
          const later = Math.min(ms + step, 2 ** 48 - 1);
          const a = uuidv7Hex(ms, r1);
          const b = uuidv7Hex(later, r2);
          expect(a < b).toBe(true);
        },
      ),
    );
    // And a plain run of consecutive milliseconds with descending randomness.
    const run = Array.from({ length: 100 }, (_, i) => uuidv7Hex(T0 + i, rnd(255 - i)));
    expect([...run].sort()).toEqual(run);
  });

  it('truncates fractional milliseconds', () => {
    expect(uuidv7Hex(T0 + 0.9, rnd(0))).toBe(uuidv7Hex(T0, rnd(0)));
  });

  it('does not read or write past the 10 random bytes it needs', () => {
    const random = new Uint8Array(16).fill(0xcc);
    const copy = Uint8Array.from(random);
    expect(uuidv7Hex(T0, random)).toBe(uuidv7Hex(T0, random.subarray(0, 10)));
    expect(random).toEqual(copy); // the caller's buffer is not mutated
  });

  it('throws on fewer than 10 random bytes (a caller bug, not user input)', () => {
    expect(() => uuidv7Hex(T0, new Uint8Array(9))).toThrow();
  });
});

describe('ShardId', () => {
  it('is built from a region and a bucket and taken apart into the same', () => {
    const id = makeShardId(parseRegion('eu')!, 17);
    expect(id).toBe('eu/17');
    expect(shardParts(id)).toEqual({ region: 'eu', bucket: 17 });
    expect(parseShardId('eu/17')).toBe(id);
  });

  it('parses only region/bucket with a canonical bucket number', () => {
    for (const bad of ['eu', 'eu/', '/1', 'eu/01', 'eu/-1', 'EU/1', 'eu/1/2', 'eu/1.5', 'eu/x', 42, null, undefined, 'eu/1234567890']) {
      expect(parseShardId(bad), String(bad)).toBeUndefined();
    }
  });

  it('is what shardOf answers for an account', () => {
    const id = makeAccountId(parseRegion('us-east')!, '0'.repeat(32));
    const shard = shardOf(id, 64);
    expect(parseShardId(shard)).toBe(shard);
    expect(shardParts(shard).region).toBe('us-east');
    expect(shardParts(shard).bucket).toBeLessThan(64);
  });

  it('refuses a bucket that is not a non-negative integer', () => {
    expect(() => makeShardId(parseRegion('eu')!, -1)).toThrow();
    expect(() => makeShardId(parseRegion('eu')!, 1.5)).toThrow();
  });
});
