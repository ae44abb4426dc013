// Accounts: open, read, freeze, unfreeze, close, statement. A tenant sees only its own
// accounts; any other id answers account_not_found exactly like one that does not exist.
import type { TraceContext } from '../observability/trace.ts';
import { randomBytes } from 'node:crypto';
import type { AccountCommand } from '../domain/account.ts';
import type { Region, TenantId } from '../domain/ids.ts';
import { makeAccountId, uuidv7Hex } from '../domain/ids.ts';
import type { Currency } from '../domain/money.ts';
import { GeopayError } from '../domain/errors.ts';
import type { AccountView } from '../domain/views.ts';
import { accountView } from '../domain/views.ts';
import type { PostingView } from '../persistence/repositories.ts';
import type { PaymentsContext } from './context.ts';
import type { Outcome } from './outcome.ts';
import { STORED_CREATED, STORED_OK, ok } from './outcome.ts';
import { resolve, stillRunning } from './resolve.ts';

export interface OpenRequest {
  tenantId: string; key: string; hash: string;
  currency: Currency; overdraftLimit: bigint; region: Region; metadata: Record<string, unknown>;
  /** The request's trace, carried to the account's owner (src/observability/trace.ts). */
  trace?: TraceContext | undefined;
}

export type StatusAction = 'freeze' | 'unfreeze' | 'close';

const COMMAND_OF: Record<StatusAction, AccountCommand> = { freeze: { type: 'Freeze' }, unfreeze: { type: 'Unfreeze' }, close: { type: 'Close' } };

export class Accounts {
  constructor(private readonly ctx: PaymentsContext) {}

  open(r: OpenRequest): Promise<Outcome<AccountView>> {
    const { keys, registry, directory } = this.ctx;
    return keys.run(r.tenantId, r.key, r.hash, async () => {
      const id = makeAccountId(r.region, uuidv7Hex(Date.now(), randomBytes(10)));
      const res = await registry.send(id, {
        cmd: {
          type: 'Open', id, kind: 'customer', tenantId: r.tenantId as TenantId, currency: r.currency, region: r.region,
          overdraftLimit: r.overdraftLimit, metadata: r.metadata, at: new Date().toISOString(),
        },
        idem: { tenantId: r.tenantId, key: r.key, requestHash: r.hash, resourceId: id, onOk: { status: STORED_CREATED, accountView: true } },
      }, { trace: r.trace });
      return resolve(res, r.hash, (rep) => {
        directory.remember({ id, tenantId: r.tenantId, currency: r.currency, kind: 'customer', region: r.region });
        return ok(accountView(rep.state));
      }, stillRunning);
    });
  }

  /** The account's committed state, read through its actor. */
  async get(tenantId: string, raw: string, trace?: TraceContext): Promise<AccountView> {
    const { id } = await this.ctx.directory.owned(tenantId, raw);
    const state = await this.ctx.registry.read(id, 0, trace);
    if (!state) throw new GeopayError('account_not_found');
    return accountView(state);
  }

  /** Freeze, unfreeze or close; with a key, a replay answers the stored account view. */
  async setStatus(r: { tenantId: string; accountId: string; action: StatusAction; key: string | undefined; hash: (accountId: string) => string; trace?: TraceContext | undefined }): Promise<Outcome<AccountView>> {
    const { id } = await this.ctx.directory.owned(r.tenantId, r.accountId);
    const hash = r.hash(id);
    const { key, tenantId } = r;
    const exec = async (): Promise<Outcome<AccountView>> => {
      const res = await this.ctx.registry.send(id, {
        cmd: COMMAND_OF[r.action],
        ...(key ? { idem: { tenantId, key, requestHash: hash, resourceId: id, onOk: { status: STORED_OK, accountView: true } } } : {}),
      }, { trace: r.trace });
      return resolve(res, hash, (rep) => ok(accountView(rep.state)), stillRunning);
    };
    return key ? this.ctx.keys.run(tenantId, key, hash, exec) : exec();
  }

  /** Postings newest first, `limit` a page (1-500), from before the cursor's seq. */
  async statement(tenantId: string, raw: string, limit: number, cursor: number | undefined): Promise<{ data: PostingView[]; nextCursor: string | null }> {
    const { id } = await this.ctx.directory.owned(tenantId, raw);
    return this.ctx.repos.accounts.statement(id, Math.min(Math.max(limit, 1), 500), cursor);
  }
}
