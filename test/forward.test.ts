// The forwarder's side of the batched node-to-node call (src/cluster/forward.ts), against an
// HTTP peer this test scripts: what one turn of the event loop sends leaves in one signed
// request, each command settles as its own answer line arrives, and a peer that goes away
// fails only the commands it had not answered, as the ones that may have run.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { AccountRequest, CommandResult } from '../src/actors/protocol.ts';
import { answerLine, decodeCommands, encodeResult, type WireCommand } from '../src/actors/wire.ts';
import { Forwarder } from '../src/cluster/forward.ts';
import { SignatureVerifier } from '../src/cluster/signature.ts';
import type { AccountId } from '../src/domain/ids.ts';

const SECRET = `gp_cluster_${'7'.repeat(32)}`;
const accounts = ['acc_eu_01', 'acc_eu_02', 'acc_eu_03'] as AccountId[];
const req = (n: number): AccountRequest => ({ cmd: { type: 'Freeze', reason: `r${n}` } as never });
const done = (n: number): CommandResult => ({ type: 'done', reply: { ok: false, code: n === 0 ? 'insufficient_funds' : 'account_frozen' } });

interface Received { items: WireCommand[]; verdict: string }

let server: Server | undefined;
let forwarder: Forwarder | undefined;

/** A peer that checks each request's signature and answers it with `answer`. */
async function peer(answer: (items: WireCommand[], res: ServerResponse) => void): Promise<{ url: string; received: Received[] }> {
  const received: Received[] = [];
  let url = '';
  const verifier = new SignatureVerifier({ secret: SECRET, windowMs: 30_000, maxNonces: 1_000, now: Date.now });
  server = createServer((r: IncomingMessage, res: ServerResponse) => {
    let body = '';
    r.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => {
      const items = decodeCommands(body);
      received.push({ items, verdict: verifier.verify({ audience: url, method: r.method!, path: r.url!, body, headers: r.headers }) });
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      answer(items, res);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, received };
}

function newForwarder(): Forwarder {
  forwarder = new Forwarder({ secret: SECRET, timeoutMs: 5_000, logger: pino({ level: 'silent' }) });
  return forwarder;
}

afterEach(async () => {
  await forwarder?.close();
  server?.closeAllConnections();
  server?.close();
  server = undefined;
});

describe('forwarding commands to an owner', () => {
  it('sends what one turn forwards in one signed request, and settles each command as its line comes, in any order', async () => {
    const { url, received } = await peer((_items, res) => {
      // The last first, then the others a moment later.
      res.write(answerLine(2, encodeResult(done(2))));
      setTimeout(() => {
        res.write(answerLine(0, encodeResult(done(0))));
        res.end(answerLine(1, encodeResult(done(1))));
      }, 300);
    });
    const f = newForwarder();
    const settled: number[] = [];
    const at = new Date().toISOString();
    const results = await Promise.all(accounts.map((id, n) => f.send(url, id, req(n), at, 0).then((r) => { settled.push(n); return r; })));
    expect(received).toHaveLength(1);
    expect(received[0]!.verdict).toBe('ok');
    expect(received[0]!.items.map((w) => [w.accountId, w.hops, w.at])).toEqual(accounts.map((id) => [id, 1, at]));
    expect(results).toEqual([done(0), done(1), done(2)]);
    expect(settled[0], 'the quick answer is not held back by the slow ones').toBe(2);

    // A later turn is a request of its own.
    await f.send(url, accounts[0]!, req(0), at, 0);
    expect(received).toHaveLength(2);
  });

  it('a peer gone mid-answer fails only the commands it had not answered, as may-have-run', async () => {
    const { url } = await peer((_items, res) => {
      res.write(answerLine(0, encodeResult(done(0))));
      setTimeout(() => res.destroy(), 100);
    });
    const f = newForwarder();
    const at = new Date().toISOString();
    const [first, second] = await Promise.all(accounts.slice(0, 2).map((id, n) => f.send(url, id, req(n), at, 0)));
    expect(first).toEqual(done(0));
    expect(second).toMatchObject({ type: 'error', error: { code: 'request_timeout' } });
  });

  it('an owner that cannot be reached fails every command as unavailable, and no hop past the limit is sent', async () => {
    const { url } = await peer(() => undefined);
    server!.close();
    server!.closeAllConnections();
    await once(server!, 'close');
    const f = newForwarder();
    const at = new Date().toISOString();
    const results = await Promise.all(accounts.map((id, n) => f.send(url, id, req(n), at, 0)));
    for (const r of results) expect(r).toMatchObject({ type: 'error', error: { code: 'shard_unavailable' } });
    expect(await f.send(url, accounts[0]!, req(0), at, 2)).toMatchObject({ type: 'error', error: { code: 'shard_unavailable', message: 'too many forwarding hops' } });
  });
});
