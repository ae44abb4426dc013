// Ledger-owned accounts, opened on demand: the external account of a region and currency
// (money entering and leaving) and a tenant's suspense account (money returned to a closed
// account is carried on to it, src/domain/account.ts decideReturn). Their ids say what they
// are (src/domain/ids.ts ledgerAccountParts), so no lookup is needed before opening one.
import type { AccountCommand } from '../domain/account.ts';
import type { AccountId } from '../domain/ids.ts';
import { ledgerAccountParts } from '../domain/ids.ts';
import type { CommandResult } from './protocol.ts';

/** Ledger accounts known open are remembered, up to this many (then forgotten and asked again). */
const MAX_KNOWN_OPEN = 100_000;

export class LedgerAccounts {
  private readonly knownOpen = new Set<string>();

  constructor(
    private readonly send: (id: AccountId, cmd: AccountCommand) => Promise<CommandResult>,
    private readonly clock: () => number,
  ) {}

  /**
   * Opens `id` when it is a ledger account not yet known open. Undefined when the account is
   * ready (or a customer account); otherwise the failed result of the open.
   */
  async ensureOpen(id: AccountId): Promise<CommandResult | undefined> {
    if (this.knownOpen.has(id)) return undefined;
    const parts = ledgerAccountParts(id);
    if (!parts) return undefined;
    const r = await this.send(id, {
      type: 'Open', id, kind: parts.kind, tenantId: parts.tenantId, currency: parts.currency, region: parts.region,
      overdraftLimit: 0n, metadata: {}, at: new Date(this.clock()).toISOString(),
    });
    if (r.type === 'error') return r;
    if (r.type === 'done' && !r.reply.ok && r.reply.code !== 'account_exists') return r;
    if (this.knownOpen.size >= MAX_KNOWN_OPEN) this.knownOpen.clear();
    this.knownOpen.add(id);
    return undefined;
  }
}
