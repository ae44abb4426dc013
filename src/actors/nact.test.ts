// The typed layer over nact: what it adds to nact is checked here alone, against a real nact
// system: a fault reaches onFault and the actor goes on, `unhandled` counts what is told and
// not yet handled, and a tell to a stopped actor is refused instead of dropped in silence.
import { afterEach, describe, expect, it } from 'vitest';
import type { ActorRef, ActorSystem } from './nact.ts';
import { ask, spawn, startSystem, stopActor, stopSystem, tell } from './nact.ts';

type Msg = { type: 'Add'; n: number } | { type: 'Get'; reply: (r: { total: number; unhandled: number }) => void } | { type: 'Boom' };

let sys: ActorSystem | undefined;
afterEach(() => {
  if (sys) stopSystem(sys);
  sys = undefined;
});

function counter(faults: unknown[] = []): ActorRef<Msg> {
  sys = startSystem(`nact-test-${process.pid}-${Math.random().toString(36).slice(2)}`);
  return spawn<number, Msg>(sys, 'counter', 0, (total, msg, self) => {
    switch (msg.type) {
      case 'Add': return total + msg.n;
      case 'Get': msg.reply({ total, unhandled: self.unhandled }); return total;
      case 'Boom': throw new Error('boom');
      default: throw new Error('unknown');
    }
  }, (err) => faults.push(err));
}

const read = (ref: ActorRef<Msg>) => ask<Msg, { total: number; unhandled: number }>(ref, (reply) => ({ type: 'Get', reply }), 1_000);

describe('typed nact layer', () => {
  it('counts what is told and not yet handled, down to zero once the last is in hand', async () => {
    const ref = counter();
    for (let i = 1; i <= 5; i++) tell(ref, { type: 'Add', n: i });
    expect(ref.unhandled).toBe(5);
    const first = read(ref);
    tell(ref, { type: 'Add', n: 100 });
    expect(ref.unhandled).toBe(7);
    // In order: the read sees the five adds, and the add told after it still waiting.
    expect(await first).toEqual({ total: 15, unhandled: 1 });
    expect(await read(ref)).toEqual({ total: 115, unhandled: 0 });
    expect(ref.unhandled).toBe(0);
  });

  it('a handler fault goes to onFault and the actor goes on with its previous state', async () => {
    const faults: unknown[] = [];
    const ref = counter(faults);
    tell(ref, { type: 'Add', n: 2 });
    tell(ref, { type: 'Boom' });
    tell(ref, { type: 'Add', n: 3 });
    expect(await read(ref)).toEqual({ total: 5, unhandled: 0 });
    expect(faults).toHaveLength(1);
    expect((faults[0] as Error).message).toBe('boom');
  });

  it('refuses a tell to a stopped actor, which nact would drop without a word', async () => {
    const ref = counter();
    tell(ref, { type: 'Add', n: 1 });
    expect(await read(ref)).toEqual({ total: 1, unhandled: 0 });
    stopActor(ref);
    expect(ref.stopped).toBe(true);
    expect(() => tell(ref, { type: 'Add', n: 1 })).toThrow(/stopped actor/);
    await expect(read(ref)).rejects.toThrow(/stopped actor/);
    expect(ref.unhandled).toBe(0);
  });
});
