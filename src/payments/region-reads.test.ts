// A read of another region's database asks that region's live nodes in turn: one that fails
// (no answer, an error answer) costs an attempt, not the read; the turn spreads reads over the
// region's nodes; an error that is not region_unavailable is the read's answer; with every
// node failing, region_unavailable.
import { describe, expect, it } from 'vitest';
import type { Ownership } from '../cluster/ownership.ts';
import { GeopayError } from '../domain/errors.ts';
import type { Region } from '../domain/ids.ts';
import type { RegionRepositories } from '../persistence/repositories.ts';
import { RegionReads, type RegionPeers } from './region-reads.ts';

const members = [
  { nodeId: 'eu-1', region: 'eu', url: 'http://eu-1', heartbeatAgeMs: 0 },
  { nodeId: 'us-1', region: 'us', url: 'http://us-1', heartbeatAgeMs: 0 },
  { nodeId: 'us-2', region: 'us', url: 'http://us-2', heartbeatAgeMs: 0 },
];

/** This node is eu-1; `answer` decides what each us node says. */
function reads(answer: (url: string) => unknown): { r: RegionReads; asked: string[] } {
  const asked: string[] = [];
  const peers: RegionPeers = {
    regionRead: async (url) => {
      asked.push(url);
      const a = answer(url);
      if (a instanceof Error) throw a;
      return a;
    },
  };
  const ownership = { members: () => members, shardIds: () => [], isLocal: () => false, route: async () => ({ kind: 'unavailable', reason: 'x' }) } as unknown as Ownership;
  const r = new RegionReads({ home: 'eu' as Region, shared: false, repos: () => ({}) as RegionRepositories, ownership, peers });
  return { r, asked };
}

const us = 'us' as Region;
const down = () => new GeopayError('region_unavailable', 'no answer');

describe('RegionReads', () => {
  it('asks the next node of the region when one fails', async () => {
    const { r, asked } = reads((url) => (url === 'http://us-1' ? down() : { id: 'acc_us_1' }));
    expect(await r.read(us, 'account', 'acc_us_1')).toEqual({ id: 'acc_us_1' });
    expect(await r.read(us, 'account', 'acc_us_1')).toEqual({ id: 'acc_us_1' });
    // First read: us-1 failed, us-2 answered. Second: its turn starts at us-2.
    expect(asked).toEqual(['http://us-1', 'http://us-2', 'http://us-2']);
  });

  it('spreads reads over the region\'s nodes', async () => {
    const { r, asked } = reads(() => null);
    for (let i = 0; i < 4; i++) await r.read(us, 'transfer', 'tr_us_1');
    expect(asked).toEqual(['http://us-1', 'http://us-2', 'http://us-1', 'http://us-2']);
  });

  it('answers region_unavailable when every node fails, and passes any other error on at once', async () => {
    const all = reads(() => down());
    await expect(all.r.read(us, 'hold', 'hold_us_1')).rejects.toMatchObject({ code: 'region_unavailable' });
    expect(all.asked).toHaveLength(2);
    const other = reads(() => new GeopayError('validation_failed', 'bad'));
    await expect(other.r.read(us, 'hold', 'hold_us_1')).rejects.toMatchObject({ code: 'validation_failed' });
    expect(other.asked).toHaveLength(1);
  });
});
