// Admin: tenants, their API keys (shown once, stored hashed) and the actor inspection endpoint.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { AccountId } from '../../domain/ids.ts';
import { makeTenantId, parseAccountId, parseTenantId, uuidv7Hex } from '../../domain/ids.ts';
import { GeopayError } from '../../domain/errors.ts';
import { accountView } from '../../domain/views.ts';
import { getTenant, hashKey, listTenants } from '../../persistence/queries.ts';
import type { Client } from '../../persistence/db.ts';
import type { Ctx } from '../app.ts';
import { idempotencyKey, requireAdmin } from '../app.ts';
import type { HttpAnswer } from '../idempotency.ts';
import { requestHash } from '../idempotency.ts';
import { send } from '../answer.ts';
import { errorResponses, idParams, idempotencyHeader } from '../schemas.ts';

const ADMIN_SCOPE = 'admin';

export function newApiKey(role: 'admin' | 'tenant'): string {
  return `gp_${role}_${randomBytes(24).toString('base64url')}`;
}

export function adminRoutes(app: FastifyInstance, ctx: Ctx): void {
  /** An admin write and its idempotency record in one transaction. */
  async function once(key: string, hash: string, create: (c: Client) => Promise<{ answer: HttpAnswer; storedBody: unknown; resourceId: string }>): Promise<HttpAnswer> {
    return ctx.keys.run(ADMIN_SCOPE, key, hash, async () => {
      const c = await ctx.pool.connect();
      try {
        await c.query('BEGIN');
        const claim = await c.query(
          'INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [ADMIN_SCOPE, key, hash],
        );
        if (claim.rowCount === 0) {
          await c.query('ROLLBACK');
          const { rows } = await c.query<{ request_hash: string; status_code: number | null; response: unknown }>(
            'SELECT request_hash, status_code, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2', [ADMIN_SCOPE, key],
          );
          const r = rows[0];
          if (!r || r.request_hash !== hash) throw new GeopayError('idempotency_key_reused');
          if (r.status_code === null) throw new GeopayError('idempotency_key_in_progress');
          return { status: r.status_code, body: r.response };
        }
        const out = await create(c);
        await c.query('UPDATE idempotency_keys SET status_code = $3, response = $4, resource_id = $5 WHERE tenant_id = $1 AND key = $2',
          [ADMIN_SCOPE, key, out.answer.status, JSON.stringify(out.storedBody), out.resourceId]);
        await c.query('COMMIT');
        return out.answer;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        c.release();
      }
    });
  }

  app.post('/v1/tenants', {
    schema: {
      tags: ['admin'], headers: idempotencyHeader,
      body: { type: 'object', additionalProperties: false, required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 200 } } },
      response: { 201: { $ref: 'Tenant#' }, ...errorResponses },
    },
  }, async (req, reply) => {
    requireAdmin(req);
    const key = idempotencyKey(req, true)!;
    const body = req.body as { name: string };
    const a = await once(key, requestHash('POST /v1/tenants', {}, body), async (c) => {
      const id = makeTenantId(uuidv7Hex(Date.now(), randomBytes(10)));
      const { rows } = await c.query<{ created_at: Date }>('INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING created_at', [id, body.name]);
      const t = { id, name: body.name, createdAt: rows[0]!.created_at.toISOString() };
      return { answer: { status: 201, body: t }, storedBody: t, resourceId: id };
    });
    return send(reply, a);
  });

  app.get('/v1/tenants', {
    schema: { tags: ['admin'], response: { 200: { type: 'object', properties: { data: { type: 'array', items: { $ref: 'Tenant#' } } } }, ...errorResponses } },
  }, async (req) => {
    requireAdmin(req);
    return { data: await listTenants(ctx.pool, 1000) };
  });

  app.post('/v1/tenants/:id/keys', {
    schema: {
      tags: ['admin'], params: idParams, headers: idempotencyHeader,
      response: {
        201: { type: 'object', properties: { id: { type: 'string' }, tenantId: { type: 'string' }, key: { type: 'string' } }, required: ['id', 'tenantId'] },
        ...errorResponses,
      },
    },
  }, async (req, reply) => {
    requireAdmin(req);
    const key = idempotencyKey(req, true)!;
    const tenantId = parseTenantId((req.params as { id: string }).id);
    if (!tenantId || !(await getTenant(ctx.pool, tenantId))) throw new GeopayError('tenant_not_found');
    const a = await once(key, requestHash('POST /v1/tenants/:id/keys', { tenantId }, null), async (c) => {
      const id = `key_${uuidv7Hex(Date.now(), randomBytes(10))}`;
      const secret = newApiKey('tenant');
      await c.query("INSERT INTO api_keys (id, tenant_id, role, key_hash) VALUES ($1, $2, 'tenant', $3)", [id, tenantId, hashKey(secret)]);
      // The secret is shown once: a replay answers the key's id without it.
      return { answer: { status: 201, body: { id, tenantId, key: secret } }, storedBody: { id, tenantId }, resourceId: id };
    });
    return send(reply, a);
  });

  app.get('/v1/cluster', {
    schema: { tags: ['admin'], response: { 200: { type: 'object', additionalProperties: true }, ...errorResponses } },
  }, async (req) => {
    requireAdmin(req);
    const { rows } = await ctx.pool.query<{ id: string; region: string; bucket: number; epoch: bigint; owner: string | null; updated_at: Date }>(
      'SELECT id, region, bucket, epoch, owner, updated_at FROM shards ORDER BY region, bucket');
    // The shards table says who bumped each epoch last; a live lease is what makes it an owner.
    const members = 'live' in ctx.ownership ? (ctx.ownership as unknown as { live(): { nodeId: string; region: string; url: string; heartbeatAgeMs: number }[] }).live()
      : [{ nodeId: ctx.ownership.nodeId, region: ctx.ownership.region, url: '', heartbeatAgeMs: 0 }];
    const owned = new Map<string, number>();
    for (const r of rows) if (r.owner) owned.set(r.owner, (owned.get(r.owner) ?? 0) + 1);
    return {
      self: { nodeId: ctx.ownership.nodeId, region: ctx.ownership.region, shardsHeld: ctx.ownership.shards().map((s) => ({ shard: s.shard, epoch: s.epoch.toString(), leaseExpiresAt: s.leaseExpiresAt })) },
      nodes: members.map((m) => ({ ...m, shards: owned.get(m.nodeId) ?? 0 })),
      // `owner` is the node that took the shard last (it bumped `epoch`); it owns it now only
      // while it is live and its lease holds, which `ownerLive` tells from the heartbeats.
      shards: rows.map((r) => ({
        id: r.id, region: r.region, bucket: r.bucket, epoch: r.epoch.toString(), owner: r.owner,
        ownerLive: members.some((m) => m.nodeId === r.owner), updatedAt: r.updated_at.toISOString(),
      })),
    };
  });

  app.get('/v1/actors/accounts/:id', {
    schema: { tags: ['admin'], params: idParams, response: { 200: { type: 'object', additionalProperties: true }, ...errorResponses } },
  }, async (req) => {
    requireAdmin(req);
    const id = parseAccountId((req.params as { id: string }).id) as AccountId | undefined;
    if (!id) throw new GeopayError('account_not_found');
    const entry = await ctx.directory.get(id);
    if (!entry) throw new GeopayError('account_not_found');
    const shard = ctx.registry.shardOf(id);
    const [insp, seqs] = await Promise.all([
      ctx.registry.inspect(id),
      ctx.pool.query<{ journal_seq: bigint | null; snapshot_seq: bigint | null; snapshot_at: Date | null }>(
        `SELECT (SELECT max(seq) FROM journal WHERE account_id = $1) AS journal_seq,
                s.seq AS snapshot_seq, s.created_at AS snapshot_at
         FROM (SELECT 1) one LEFT JOIN snapshots s ON s.account_id = $1`, [id]),
    ]);
    const row = seqs.rows[0]!;
    const info = ctx.ownership.info(shard);
    // Owned elsewhere: the shards table names the last node to take it, at which epoch.
    const shardRow = info ? undefined : (await ctx.pool.query<{ owner: string | null; epoch: bigint }>('SELECT owner, epoch FROM shards WHERE id = $1', [shard])).rows[0];
    return {
      accountId: id,
      resident: insp.resident,
      ...(insp.resident ? {
        phase: insp.phase, state: insp.state ? accountView(insp.state) : null, mailboxDepth: ctx.registry.mailboxDepth(id),
        pending: insp.pending, inFlight: insp.inFlight, lastActivityAt: insp.lastActivityAt, memorySnapshotSeq: insp.lastSnapshotSeq,
      } : { mailboxDepth: 0 }),
      journalSeq: row.journal_seq === null ? 0 : Number(row.journal_seq),
      lastSnapshotSeq: row.snapshot_seq === null ? 0 : Number(row.snapshot_seq),
      lastSnapshotAt: row.snapshot_at?.toISOString() ?? null,
      owner: {
        node: info?.owner ?? shardRow?.owner ?? null, region: info ? ctx.ownership.region : null, shardRegion: shard.split('/')[0], shard,
        epoch: info ? info.epoch.toString() : (shardRow ? shardRow.epoch.toString() : null), leaseExpiresAt: info?.leaseExpiresAt ?? null,
        local: info !== undefined,
      },
    };
  });
}
