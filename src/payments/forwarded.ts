// Requests a peer forwarded to this node because it owns the account's shard: decoded from
// the wire format, run on the local registry, and encoded back.
import type { TraceContext } from '../observability/trace.ts';
import type { AccountId } from '../domain/ids.ts';
import { parseAccountId } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import { decodeRequest, encodeResult, encodeState } from '../actors/wire.ts';

function accountOf(raw: string): AccountId {
  const id = parseAccountId(raw);
  if (!id) throw new GeopayError('account_not_found');
  return id;
}

export class ForwardedRequests {
  constructor(private readonly registry: AccountRegistry) {}

  /** A command for one of this node's accounts, in the wire format; the result, encoded. */
  async command(accountId: string, body: string, trace?: TraceContext): Promise<string> {
    const id = accountOf(accountId);
    const w = decodeRequest(body);
    return encodeResult(await this.registry.send(id, w.req, { at: w.at, hops: w.hops, trace }));
  }

  /** The committed state of one of this node's accounts, encoded. */
  async state(accountId: string, hops: number, trace?: TraceContext): Promise<string> {
    return encodeState(await this.registry.read(accountOf(accountId), hops, trace));
  }
}
