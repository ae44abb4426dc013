// Accounts: open, read, freeze, unfreeze, close, statement. A tenant sees only its own
// accounts; any other id answers 404 exactly like one that does not exist.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AccountCommand } from '../../domain/account.ts';
import type { AccountId, TenantId } from '../../domain/ids.ts';
import { makeAccountId, parseAccountId, uuidv7Hex } from '../../domain/ids.ts';
import { GeopayError } from '../../domain/errors.ts';
import { accountView } from '../../domain/views.ts';
import { statement } from '../../persistence/queries.ts';
import type { Ctx } from '../app.ts';
import { idempotencyKey, tenantOf } from '../app.ts';
import { requestHash } from '../idempotency.ts';
import type { OpenAccountBody } from '../requests.ts';
import { openAccountSchema, parseOpenAccount } from '../requests.ts';
import type { HttpAnswer } from '../idempotency.ts';
import { answer, send } from '../answer.ts';
import { errorResponses, idParams, idempotencyHeader } from '../schemas.ts';

/** The account if it exists and belongs to the tenant; 404 otherwise, whatever the reason. */
export async function ownedAccount(ctx: Ctx, tenantId: string, raw: string): Promise<{ id: AccountId; currency: string; region: string }> {
  const id = parseAccountId(raw);
  if (!id || id.startsWith('ext_')) throw new GeopayError('account_not_found');
  const e = await ctx.directory.get(id);
  if (!e || e.tenantId !== tenantId) throw new GeopayError('account_not_found');
  return { id, currency: e.currency, region: e.region };
}

export function accountRoutes(app: FastifyInstance, ctx: Ctx): void {
  app.post('/v1/accounts', { schema: openAccountSchema }, async (req, reply) => {
    const tenantId = tenantOf(req);
    const key = idempotencyKey(req, true)!;
    const body = req.body as OpenAccountBody;
    const { currency, overdraftLimit, region } = parseOpenAccount(body, ctx.config.region);
    const hash = requestHash('POST /v1/accounts', {}, body);
    const a = await ctx.keys.run(tenantId, key, hash, async () => {
      const id = makeAccountId(region, uuidv7Hex(Date.now(), randomBytes(10)));
      const cmd: AccountCommand = {
        type: 'Open', id, kind: 'customer', tenantId: tenantId as TenantId, currency, region,
        overdraftLimit, metadata: body.metadata ?? {}, at: new Date().toISOString(),
      };
      const r = await ctx.registry.send(id, {
        cmd,
        idem: { tenantId, key, requestHash: hash, resourceId: id, onOk: { status: 201, accountView: true } },
      });
      return answer(r, hash, (rep) => {
        ctx.directory.remember({ id, tenantId, currency, kind: 'customer', region });
        return { status: 201, body: accountView(rep.state) };
      }, async () => {
        throw new GeopayError('idempotency_key_in_progress');
      });
    });
    return send(reply, a);
  });

  app.get('/v1/accounts/:id', {
    schema: { tags: ['accounts'], params: idParams, response: { 200: { $ref: 'Account#' }, ...errorResponses } },
  }, async (req) => {
    const tenantId = tenantOf(req);
    const { id } = await ownedAccount(ctx, tenantId, (req.params as { id: string }).id);
    const state = await ctx.registry.read(id);
    if (!state) throw new GeopayError('account_not_found');
    return accountView(state);
  });

  for (const action of ['freeze', 'unfreeze', 'close'] as const) {
    app.post(`/v1/accounts/:id/${action}`, {
      schema: { tags: ['accounts'], params: idParams, headers: idempotencyHeader, response: { 200: { $ref: 'Account#' }, ...errorResponses } },
    }, async (req: FastifyRequest, reply) => {
      const tenantId = tenantOf(req);
      const { id } = await ownedAccount(ctx, tenantId, (req.params as { id: string }).id);
      const key = idempotencyKey(req, false);
      const cmd: AccountCommand = { type: action === 'freeze' ? 'Freeze' : action === 'unfreeze' ? 'Unfreeze' : 'Close' };
      const hash = requestHash(`POST /v1/accounts/:id/${action}`, { id }, null);
      const exec = async (): Promise<HttpAnswer> => {
        const r = await ctx.registry.send(id, {
          cmd,
          ...(key ? { idem: { tenantId, key, requestHash: hash, resourceId: id, onOk: { status: 200, accountView: true } } } : {}),
        });
        return answer(r, hash, (rep) => ({ status: 200, body: accountView(rep.state) }), async () => {
          throw new GeopayError('idempotency_key_in_progress');
        });
      };
      return send(reply, key ? await ctx.keys.run(tenantId, key, hash, exec) : await exec());
    });
  }

  app.get('/v1/accounts/:id/statement', {
    schema: {
      tags: ['accounts'], params: idParams,
      querystring: {
        type: 'object', additionalProperties: false,
        properties: { limit: { type: 'string', pattern: '^[0-9]{1,4}$' }, cursor: { type: 'string', pattern: '^[0-9]{1,15}$' } },
      },
      response: {
        200: { type: 'object', properties: { data: { type: 'array', items: { $ref: 'Posting#' } }, nextCursor: { type: ['string', 'null'] } }, required: ['data', 'nextCursor'] },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const tenantId = tenantOf(req);
    const { id } = await ownedAccount(ctx, tenantId, (req.params as { id: string }).id);
    const q = req.query as { limit?: string; cursor?: string };
    const limit = Math.min(Math.max(Number(q.limit ?? 50), 1), 500);
    return statement(ctx.pool, id, limit, q.cursor === undefined ? undefined : Number(q.cursor));
  });
}
