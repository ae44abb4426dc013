// Requests a peer forwarded to this node because it owns the account's shard: decoded from
// the wire format, run on the local registry, and encoded back.
import type { TraceContext } from '../observability/trace.ts';
import type { AccountId, TransferId } from '../domain/ids.ts';
import { parseAccountId, parseRegion } from '../domain/ids.ts';
import { REGION_READS } from '../persistence/repositories.ts';
import type { RegionRead, RegionReadArgs } from '../persistence/repositories.ts';
import type { RegionReads } from './region-reads.ts';
import { GeopayError } from '../domain/errors.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import { decodeRequest, decodeValue, encodeResult, encodeState, encodeValue } from '../actors/wire.ts';
import type { WireRequest } from '../actors/wire.ts';
import type { Saga } from './saga.ts';
import { outcomeWithin } from './saga.ts';

function accountOf(raw: string): AccountId {
  const id = parseAccountId(raw);
  if (!id) throw new GeopayError('account_not_found');
  return id;
}

export class ForwardedRequests {
  constructor(
    private readonly registry: AccountRegistry,
    private readonly regions: RegionReads,
    private readonly saga: Pick<Saga, 'waitForTransfer' | 'outcomeElsewhere'>,
    /** How long the debit itself may take (ASK_TIMEOUT_MS), before the outcome's wait starts. */
    private readonly askTimeoutMs: number,
  ) {}

  /** A read of a region's database this node reads (its own, or one it holds shards of), encoded. */
  async regionRead(rawRegion: string, body: string): Promise<string> {
    const region = parseRegion(rawRegion);
    const w = decodeValue(body) as { op?: unknown; args?: unknown } | undefined;
    if (!region || !w || typeof w.op !== 'string' || !Object.hasOwn(REGION_READS, w.op) || !Array.isArray(w.args)) throw new GeopayError('not_found');
    const op = w.op as RegionRead;
    return encodeValue(await this.regions.local(region, op, w.args as RegionReadArgs<typeof op>));
  }

  /**
   * A command for one of this node's accounts, in the wire format; the result, encoded. A
   * debit whose sender waits for its outcome (awaitOutcomeMs) is answered with it: this node
   * commits the outcome or is answered it (src/payments/saga.ts), and the sender has nothing
   * to poll or listen for.
   */
  async command(accountId: string, body: string, trace?: TraceContext): Promise<string> {
    const id = accountOf(accountId);
    const w = decodeRequest(body);
    const transferId = w.awaitOutcomeMs && w.req.transfer ? w.req.idem?.resourceId as TransferId | null | undefined : undefined;
    if (!transferId) return encodeResult(await this.registry.send(id, w.req, { at: w.at, hops: w.hops, trace }));
    return this.commandWithOutcome(id, transferId, w, trace);
  }

  private async commandWithOutcome(id: AccountId, transferId: TransferId, w: WireRequest, trace: TraceContext | undefined): Promise<string> {
    const waitMs = w.awaitOutcomeMs!;
    // From before the debit is sent: the credit can land before we look.
    const settled = this.saga.waitForTransfer(transferId, this.askTimeoutMs + waitMs, this.saga.outcomeElsewhere(id, w.req.transfer!.destinationId));
    const r = await this.registry.send(id, w.req, { at: w.at, hops: w.hops, trace });
    if (r.type !== 'done' || !r.reply.ok) {
      settled.cancel();
      return encodeResult(r, null);
    }
    return encodeResult(r, (await outcomeWithin(settled, waitMs)) ?? null);
  }

  /** The committed state of one of this node's accounts, encoded. */
  async state(accountId: string, hops: number, trace?: TraceContext): Promise<string> {
    return encodeState(await this.registry.read(accountOf(accountId), hops, trace));
  }
}
