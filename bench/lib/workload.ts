// Turns a workload spec and the accounts opened at setup into a reproducible stream of
// operations: operation i depends only on the seed and on i, never on timing, so two runs
// with one seed ask for the same payments in the same order (account ids aside, which the
// server chooses: the stream refers to accounts by their position in the setup).
import type { OpKind, WorkloadSpec } from './options.ts';
import { OP_KINDS } from './options.ts';
import { Prng, WeightedChoice, ZipfSampler } from './prng.ts';

export interface Op {
  kind: OpKind;
  path: string;
  body: Record<string, string | number>;
  /** A second request made with the id the first one answered (capture or void a hold, refund a transfer). */
  then?: { op: 'capture' | 'void' | 'refund'; path: (id: string) => string; body: Record<string, string> | undefined };
}

export interface AccountSet {
  /** Customer accounts by currency, in the order they were opened. */
  byCurrency: Map<string, string[]>;
  /** The one merchant account per currency that hot transfers credit. */
  merchants: Map<string, string>;
}

const PATHS: Record<OpKind, string> = { transfer: '/v1/transfers', deposit: '/v1/deposits', withdraw: '/v1/withdrawals', hold: '/v1/holds', refund: '/v1/transfers' };

interface CurrencyPool {
  currency: string;
  accounts: string[];
  /** Zipf skew: rank -> position in `accounts`, a seeded shuffle so hot accounts are not the oldest. */
  order: Uint32Array | undefined;
  zipf: ZipfSampler | undefined;
}

export class Workload {
  private readonly rng: Prng;
  private readonly kinds: WeightedChoice<OpKind>;
  private readonly pools: CurrencyPool[];
  private readonly currencyChoice: WeightedChoice<CurrencyPool>;
  generated = 0;

  constructor(private readonly spec: WorkloadSpec, private readonly accounts: AccountSet, seed: number) {
    this.rng = new Prng(seed);
    this.kinds = new WeightedChoice(OP_KINDS.map((k) => ({ value: k, weight: spec.mix[k] })));
    this.pools = spec.currencies.map((currency) => {
      const list = accounts.byCurrency.get(currency) ?? [];
      if (list.length < 2) throw new Error(`workload needs at least 2 accounts in ${currency}, has ${list.length}`);
      const skew = spec.skew;
      return {
        currency,
        accounts: list,
        order: skew.kind === 'zipf' ? this.rng.permutation(list.length) : undefined,
        zipf: skew.kind === 'zipf' ? new ZipfSampler(list.length, skew.s) : undefined,
      };
    });
    if (spec.skew.kind === 'hot') {
      for (const c of spec.currencies) {
        if (!accounts.merchants.has(c)) throw new Error(`hot skew needs a merchant account in ${c}`);
      }
    }
    // Uniform over accounts means a currency is chosen in proportion to its accounts.
    this.currencyChoice = new WeightedChoice(this.pools.map((p) => ({ value: p, weight: p.accounts.length })));
  }

  private pickAccount(p: CurrencyPool): string {
    if (p.zipf && p.order) return p.accounts[p.order[p.zipf.sample(this.rng)]!]!;
    return p.accounts[this.rng.int(p.accounts.length)]!;
  }

  private pickOther(p: CurrencyPool, not: string): string {
    // Terminates: every pool has at least two accounts, and a zipf draw reaches every rank.
    for (;;) {
      const a = this.pickAccount(p);
      if (a !== not) return a;
    }
  }

  next(): Op {
    this.generated++;
    const kind = this.kinds.pick(this.rng);
    const p = this.currencyChoice.pick(this.rng);
    const amount = String(this.rng.between(1, this.spec.maxAmount));
    const currency = p.currency;
    switch (kind) {
      case 'transfer': {
        const skew = this.spec.skew;
        const hot = skew.kind === 'hot' && this.rng.next() < skew.fraction;
        const source = this.pickAccount(p);
        const destination = hot ? this.accounts.merchants.get(currency)! : this.pickOther(p, source);
        return { kind, path: PATHS[kind], body: { sourceAccountId: source, destinationAccountId: destination, amount, currency } };
      }
      case 'deposit':
      case 'withdraw':
        return { kind, path: PATHS[kind], body: { accountId: this.pickAccount(p), amount, currency } };
      case 'hold': {
        const source = this.pickAccount(p);
        const body = { sourceAccountId: source, destinationAccountId: this.pickOther(p, source), amount, currency, expiresInSeconds: 300 };
        const r = this.rng.next();
        const part = String(this.rng.between(1, Number(amount)));
        const then: Op['then'] = r < 0.5
          ? { op: 'capture', path: (id) => `/v1/holds/${id}/capture`, body: { amount: part } }
          : r < 0.8
            ? { op: 'capture', path: (id) => `/v1/holds/${id}/capture`, body: {} }
            : { op: 'void', path: (id) => `/v1/holds/${id}/void`, body: undefined };
        return { kind, path: PATHS[kind], body, then };
      }
      case 'refund': {
        const source = this.pickAccount(p);
        const part = String(this.rng.between(1, Number(amount)));
        return {
          kind, path: PATHS[kind], body: { sourceAccountId: source, destinationAccountId: this.pickOther(p, source), amount, currency },
          then: { op: 'refund', path: (id) => `/v1/transfers/${id}/refunds`, body: { amount: part } },
        };
      }
    }
  }
}
