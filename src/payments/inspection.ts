// What an operator reads: the cluster map (live nodes, the shards this node holds, every
// shard's epoch and last owner) and one account actor's state, mailbox and journal position.
import type { AccountId } from '../domain/ids.ts';
import { parseAccountId, shardParts } from '../domain/ids.ts';
import { GeopayError } from '../domain/errors.ts';
import { accountView } from '../domain/views.ts';
import type { AccountRegistry } from '../actors/registry.ts';
import type { MemberView, Ownership } from '../cluster/ownership.ts';
import type { Repositories } from '../persistence/repositories.ts';
import type { Directory } from './directory.ts';

/** GET /v1/cluster's answer; the ops page groups it by region. */
export interface ClusterMap {
  self: { nodeId: string; region: string; shardsHeld: { shard: string; epoch: string; leaseExpiresAt: string | null }[] };
  nodes: (MemberView & { shards: number })[];
  shards: { id: string; region: string; bucket: number; epoch: string; owner: string | null; ownerLive: boolean; updatedAt: string }[];
}

export class Inspection {
  constructor(
    private readonly registry: AccountRegistry,
    private readonly ownership: Ownership,
    private readonly repos: Pick<Repositories, 'shards' | 'accounts'>,
    private readonly directory: Directory,
  ) {}

  async cluster(): Promise<ClusterMap> {
    const rows = await this.repos.shards.list();
    // The shards table says who bumped each epoch last; a live lease is what makes it an owner.
    const members = this.ownership.members();
    const owned = new Map<string, number>();
    for (const r of rows) if (r.owner) owned.set(r.owner, (owned.get(r.owner) ?? 0) + 1);
    return {
      self: {
        nodeId: this.ownership.nodeId, region: this.ownership.region,
        shardsHeld: this.ownership.shards().map((s) => ({ shard: s.shard, epoch: s.epoch.toString(), leaseExpiresAt: s.leaseExpiresAt })),
      },
      nodes: members.map((m) => ({ ...m, shards: owned.get(m.nodeId) ?? 0 })),
      // `owner` is the node that took the shard last (it bumped `epoch`); it owns it now only
      // while it is live and its lease holds, which `ownerLive` tells from the heartbeats.
      shards: rows.map((r) => ({
        id: r.id, region: r.region, bucket: r.bucket, epoch: r.epoch.toString(), owner: r.owner,
        ownerLive: members.some((m) => m.nodeId === r.owner), updatedAt: r.updatedAt,
      })),
    };
  }

  async account(raw: string): Promise<Record<string, unknown>> {
    const id = parseAccountId(raw) as AccountId | undefined;
    if (!id) throw new GeopayError('account_not_found');
    if (!(await this.directory.get(id))) throw new GeopayError('account_not_found');
    const shard = this.registry.shardOf(id);
    const [insp, pos] = await Promise.all([this.registry.inspect(id), this.repos.accounts.journalPosition(id)]);
    const info = this.ownership.info(shard);
    // Owned elsewhere: the shards table names the last node to take it, at which epoch.
    const shardRow = info ? undefined : await this.repos.shards.get(shard);
    return {
      accountId: id,
      resident: insp.resident,
      ...(insp.resident ? {
        phase: insp.phase, state: insp.state ? accountView(insp.state) : null, mailboxDepth: this.registry.mailboxDepth(id),
        pending: insp.pending, inFlight: insp.inFlight, lastActivityAt: insp.lastActivityAt, memorySnapshotSeq: insp.lastSnapshotSeq,
      } : { mailboxDepth: 0 }),
      journalSeq: pos.journalSeq,
      lastSnapshotSeq: pos.snapshotSeq,
      lastSnapshotAt: pos.snapshotAt,
      owner: {
        node: info?.owner ?? shardRow?.owner ?? null, region: info ? this.ownership.region : null, shardRegion: shardParts(shard).region, shard,
        epoch: info ? info.epoch.toString() : (shardRow ? shardRow.epoch.toString() : null), leaseExpiresAt: info?.leaseExpiresAt ?? null,
        local: info !== undefined,
      },
    };
  }
}
