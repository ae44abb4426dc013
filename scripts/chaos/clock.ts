// Fault 11 of the chaos matrix: one node's wall clock jumps +30 s, then -30 s, then back, as an
// NTP step or a VM restore does, while its monotonic clock runs on. The node runs under
// libfaketime (Debian's faketime package) with a timestamp file of its own that the fault
// rewrites; FAKETIME_DONT_FAKE_MONOTONIC leaves CLOCK_MONOTONIC alone, as a real step would.
// What must hold: ownership does not break (lease validity is on the monotonic clock), and no
// hold expires early (deadlines are judged on the database's clock): holds made through the
// jumping node with a short expiry are watched, and one seen expired before it was due fails.
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NO_WINDOW_MS, type Fault, type FaultContext } from './faults.ts';
import type { World } from './world.ts';

const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1';
const JUMP_S = 30;
/** How long each jump lasts. */
const STEP_MS = 6_000;
const HOLDS = 6;
const HOLD_EXPIRES_S = 20;
/** Slack for the watch's own polling: a hold read expired this much before its due time is early. */
const SLACK_MS = 250;

/** The jumping node and its clock file, from prepare() to run(). */
let target: { nodeId: string; file: string } | undefined;

const setClock = (offset: string): void => writeFileSync(target!.file, `${offset}\n`);

export const clockJump: Fault = {
  id: 'clock-jump',
  async prepare(world) {
    if (!existsSync(LIBFAKETIME)) throw new Error(`clock-jump needs libfaketime (${LIBFAKETIME}): apt-get install -y faketime`);
    const { node } = await world.ownerOf(world.hot);
    const file = join(tmpdir(), `geopay-chaos-clock-${process.pid}-${node.nodeId}`);
    target = { nodeId: node.nodeId, file };
    setClock('+0s');
    process.once('exit', () => rmSync(file, { force: true }));
    await world.restartNode(node.nodeId, { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: file, FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' });
  },
  async run(ctx) {
    const { world } = ctx;
    const nodeId = target!.nodeId;
    const owned = await world.accountsOwnedBy(nodeId);
    const holds = await makeHolds(world, nodeId, owned);
    const watching = watchHolds(ctx, holds);
    setClock(`+${JUMP_S}s`);
    await sleep(STEP_MS);
    setClock(`-${JUMP_S}s`);
    await sleep(STEP_MS);
    setClock('+0s');
    await watching;
    rmSync(target!.file, { force: true });
    return {
      action: `${nodeId}'s wall clock +${JUMP_S} s for ${STEP_MS} ms, then -${JUMP_S} s for ${STEP_MS} ms, then true (libfaketime); ${holds.length} holds of ${HOLD_EXPIRES_S} s made through it watched`,
      affected: { label: `${nodeId}'s shards (${owned.length} accounts)`, accounts: new Set(owned) },
    };
  },
  boundMs: () => NO_WINDOW_MS,
};

interface Watched {
  id: string;
  /** performance.now() when the hold was answered. */
  madeAt: number;
}

/** Holds through the jumping node on accounts it owns, each due in HOLD_EXPIRES_S. */
async function makeHolds(world: World, nodeId: string, owned: string[]): Promise<Watched[]> {
  const node = world.running.cluster.node(nodeId);
  const t = world.tenant;
  const out: Watched[] = [];
  for (let i = 0; i < HOLDS && owned.length > 1; i++) {
    const body = { sourceAccountId: owned[i % owned.length]!, destinationAccountId: owned[(i + 1) % owned.length]!, amount: '5', currency: 'USD', expiresInSeconds: HOLD_EXPIRES_S };
    const sentAt = performance.now();
    const r = await world.client(node).post({ op: 'hold', path: '/v1/holds', body, key: `clock-hold-${Date.now()}-${i}`, bearer: t.key, tenant: t.id, phase: 'clock-jump' }, undefined, 3);
    const id = (r.answer as { id?: string } | null)?.id;
    if (r.status === 201 && id) out.push({ id, madeAt: sentAt });
  }
  return out;
}

/** Until every hold is due (and a little more): one read expired before its due time is a failure. */
async function watchHolds(ctx: FaultContext, holds: Watched[]): Promise<void> {
  const { world, extra } = ctx;
  if (holds.length === 0) {
    extra.failures.push('clock-jump: no hold could be made through the jumping node');
    return;
  }
  const until = Math.max(...holds.map((h) => h.madeAt)) + HOLD_EXPIRES_S * 1000 + 2_000;
  const early = new Set<string>();
  while (performance.now() < until) {
    for (const h of holds) {
      const nodes = world.running.cluster.live();
      const r = await world.client(nodes[Math.floor(Math.random() * nodes.length)]!).get(`/v1/holds/${h.id}`, world.tenant.key);
      const state = (r.answer as { state?: string } | null)?.state;
      const age = performance.now() - h.madeAt;
      if (state === 'expired' && age < HOLD_EXPIRES_S * 1000 - SLACK_MS && !early.has(h.id)) {
        early.add(h.id);
        extra.failures.push(`clock-jump: hold ${h.id} read expired ${Math.round(age)} ms after it was made, due after ${HOLD_EXPIRES_S} s`);
      }
    }
    await sleep(500);
  }
}
