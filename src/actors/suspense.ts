// Suspense accounts, opened on demand. Money returned to a closed account is carried on to the
// tenant's suspense account of its region and currency (src/domain/account.ts, decideReturn);
// that credit may be the first the suspense account ever sees, so the registry opens it first.
// One per tenant, region and currency, named by its id (src/domain/ids.ts): no lookup needed.
import type { AccountCommand } from '../domain/account.ts';
import type { AccountId } from '../domain/ids.ts';
import { suspenseParts } from '../domain/ids.ts';
import type { CommandResult } from './protocol.ts';

/** Suspense accounts known open are remembered, up to this many (then forgotten and asked again). */
const MAX_KNOWN_OPEN = 100_000;

export class SuspenseAccounts {
  private readonly knownOpen = new Set<string>();

  constructor(
    private readonly send: (id: AccountId, cmd: AccountCommand) => Promise<CommandResult>,
    private readonly clock: () => number,
  ) {}

  /**
   * Opens `id` when it is a suspense account not yet known open. Undefined when the account is
   * ready (or not a suspense account); otherwise the failed result, and the credit waits for
   * the relay's next pass.
   */
  async ensureOpen(id: AccountId): Promise<CommandResult | undefined> {
    if (this.knownOpen.has(id)) return undefined;
    const parts = suspenseParts(id);
    if (!parts) return undefined;
    const r = await this.send(id, {
      type: 'Open', id, kind: 'suspense', tenantId: parts.tenantId, currency: parts.currency, region: parts.region,
      overdraftLimit: 0n, metadata: {}, at: new Date(this.clock()).toISOString(),
    });
    if (r.type === 'error') return r;
    if (r.type === 'done' && !r.reply.ok && r.reply.code !== 'account_exists') return r;
    if (this.knownOpen.size >= MAX_KNOWN_OPEN) this.knownOpen.clear();
    this.knownOpen.add(id);
    return undefined;
  }
}
