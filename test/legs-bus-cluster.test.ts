// Cross-region legs on a 3-server JetStream cluster: three nats-server processes of this file's
// own with cluster routes, the legs streams at R3 (NATS_REPLICAS=3), two regions with a node and
// a database each. Under a stream of transfers both ways, the server leading the us legs stream
// is killed -9: publishing and consuming go on through the other two (transfers keep settling
// within their request's wait), it is started again, and everything settles once, checked.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legsStream } from '../src/payments/legs.ts';
import { startBusRegions } from './helpers/bus-regions.ts';
import type { BusRegions } from './helpers/bus-regions.ts';
import { waitFor } from './helpers/cluster.ts';

const WORKERS = 4;
const OUTAGE_MS = 15_000;
/** Answers in a row that settled within their request: the legs flow again. */
const RUN = 10;
let regions: BusRegions | undefined;

beforeAll(async () => {
  regions = await startBusRegions('legs_r3', 3);
}, 180_000);

afterAll(async () => {
  await regions?.stop();
}, 60_000);

describe('cross-region legs on a 3-server JetStream cluster', () => {
  it('one server of three killed -9 under cross-region transfers: publishing and consuming go on', async () => {
    const g = regions!;
    // The nodes made the streams at R3 once they reached the bus.
    const leader = await waitFor('the us legs stream has a leader', 30_000, async () => (await regions!.reader.streamState(legsStream('us')).catch(() => undefined))?.leader);
    const victim = regions!.nats.names.indexOf(leader);
    expect(victim).toBeGreaterThanOrEqual(0);
    let phase: 'before' | 'down' | 'after' = 'before';
    const downTimeline: { ms: number; status: number }[] = [];
    let killedAt = 0;
    const answered = { before: [] as number[], down: [] as number[], after: [] as number[] };
    const worker = async () => {
      while (phase !== 'after' || answered.after.length < 40) {
        const r = Math.random() < 0.5 ? await g.transfer('eu', 'us') : await g.transfer('us', 'eu');
        expect([201, 202], JSON.stringify(r.body)).toContain(r.status);
        answered[phase].push(r.status);
        if (phase === 'down') downTimeline.push({ ms: Date.now() - killedAt, status: r.status });
      }
    };
    const chaos = (async () => {
      await sleep(2_000);
      await regions!.nats.kill9(victim);
      killedAt = Date.now();
      phase = 'down';
      await sleep(OUTAGE_MS);
      await regions!.nats.restart(victim);
      phase = 'after';
    })();
    const seqBeforeKill = (await regions!.reader.streamState(legsStream('us'))).lastSeq;
    await Promise.all([...Array.from({ length: WORKERS }, worker), chaos]);
    await g.settled(90_000);
    // Back: the first of RUN answers in a row settled within their request (the stream's and the
    // consumers' leaders elected again among the two left, the pulls made again).
    const back = downTimeline.findIndex((_, i) => downTimeline.slice(i, i + RUN).length === RUN && downTimeline.slice(i, i + RUN).every((a) => a.status === 201));
    const settledDown = answered.down.filter((s) => s === 201).length;
    console.info(`one nats-server of three killed (${leader}, the us legs stream leader) for ${OUTAGE_MS} ms: transfers before ${answered.before.length}, while down ${answered.down.length} (${settledDown} settled within their request; legs flowing again ${back >= 0 ? downTimeline[back]!.ms : '-'} ms after the kill), after ${answered.after.length}`);
    // With one server of three down, legs were published and consumed again: transfers settled in their request.
    expect(back, JSON.stringify(downTimeline)).toBeGreaterThanOrEqual(0);
    expect((await regions!.reader.streamState(legsStream('us'))).lastSeq).toBeGreaterThan(seqBeforeKill);
    expect((await regions!.reader.streamState(legsStream('us'))).leader).not.toBe(undefined);
    expect(await g.creditedTwice()).toEqual([]);
    await g.check();
  }, 240_000);
});
