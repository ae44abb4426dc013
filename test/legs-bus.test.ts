// Cross-region legs on the bus, end to end with real processes: a nats-server of this file's
// own, a database per region (eu, us) on the local PostgreSQL, a Redis master, a node per
// region with NATS_URLS (LEGS_TRANSPORT=bus, the default). Credits and outcomes travel through
// GEOPAY_LEGS_EU/US; the file kills nats-server -9 in the middle of a stream of transfers both
// ways and starts it again. Nothing acknowledged is lost, nothing is applied twice, every
// transfer settles, and the cross-database checker passes.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legsStream } from '../src/payments/legs.ts';
import { startBusRegions } from './helpers/bus-regions.ts';
import type { BusRegions } from './helpers/bus-regions.ts';
import { waitFor } from './helpers/cluster.ts';

const WORKERS = 6;
let regions: BusRegions | undefined;

beforeAll(async () => {
  regions = await startBusRegions('legs_bus', 1);
}, 180_000);

afterAll(async () => {
  await regions?.stop();
}, 60_000);

const lastSeqs = async () => ({ eu: (await regions!.reader.streamState(legsStream('eu'))).lastSeq, us: (await regions!.reader.streamState(legsStream('us'))).lastSeq });

describe('cross-region legs on the bus', () => {
  it('carries credits and outcomes through each region\'s stream, and the edge hears the outcome', async () => {
    const g = regions!;
    const before = await lastSeqs();
    const answers: number[] = [];
    for (let i = 0; i < 10; i++) {
      const r = i % 2 === 0 ? await g.transfer('eu', 'us') : await g.transfer('us', 'eu');
      answers.push(r.status);
      if (r.status === 201) expect(r.body.state).toBe('settled');
    }
    // Each transfer put a credit on the destination's stream and an outcome on the source's.
    const after = await lastSeqs();
    expect(after.us - before.us).toBeGreaterThanOrEqual(10);
    expect(after.eu - before.eu).toBeGreaterThanOrEqual(10);
    // Work-queue streams: each leg is removed once its consumer acked it.
    await waitFor('legs acked', 30_000, async () => ((await regions!.reader.streamState(legsStream('us'))).messages === 0 && (await regions!.reader.streamState(legsStream('eu'))).messages === 0 ? true : undefined));
    // The outcome came back within the request's wait: answered settled, not 202 in flight.
    expect(answers.filter((s) => s === 201).length, `answers ${answers.join(',')}`).toBeGreaterThanOrEqual(8);
    const metrics = await fetch(`${g.cluster.live('eu')[0]!.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/geopay_bus_consumer_pending\{[^}]*consumer="legs-us"[^}]*\} 0/);
    expect(metrics).toMatch(/geopay_bus_oldest_pending_seconds\{[^}]*consumer="legs-eu"/);
    await g.settled(30_000);
    await g.check();
  }, 120_000);

  it('nats-server killed -9 and restarted during a stream of cross-region transfers: nothing lost, nothing twice, all settled', async () => {
    const g = regions!;
    const runMs = 12_000;
    const started = Date.now();
    const counts = { acknowledged: 0, inFlightAnswers: 0 };
    const worker = async () => {
      while (Date.now() - started < runMs) {
        const r = Math.random() < 0.5 ? await g.transfer('eu', 'us') : await g.transfer('us', 'eu');
        expect([201, 202], JSON.stringify(r.body)).toContain(r.status);
        counts.acknowledged++;
        if (r.status === 202) counts.inFlightAnswers++;
      }
    };
    const chaos = (async () => {
      await sleep(3_000);
      await regions!.nats.kill9(0);
      await sleep(4_000);
      await regions!.nats.restart(0);
    })();
    await Promise.all([...Array.from({ length: WORKERS }, worker), chaos]);
    const ended = Date.now();
    await g.settled(90_000);
    console.info(`bus killed 4 s during ${runMs} ms of transfers: ${counts.acknowledged} acknowledged (${counts.inFlightAnswers} answered in flight); all settled ${Date.now() - ended} ms after the stream ended`);
    // While the bus was away the legs waited in PostgreSQL: those requests were answered in flight.
    expect(counts.inFlightAnswers).toBeGreaterThan(0);
    expect(await g.creditedTwice()).toEqual([]);
    for (const rec of g.acknowledged.filter((a) => a.op === 'transfer')) {
      const id = (rec.answer as { id: string }).id;
      const t = await g.sql[id.startsWith('tr_eu_') ? 'eu' : 'us'].query('SELECT state FROM transfers WHERE id = $1', [id]);
      expect(t.rows[0]?.state, id).toBe('settled');
    }
    await g.check();
  }, 240_000);
});
