-- Suspense accounts: money returned to an account that was closed while its transfer was in
-- flight can never be spent there, so the closed account sends it on, in the same commit as
-- the return, to its tenant's suspense account of that region and currency (a transfer of
-- kind 'suspense'); the admin lists those balances and pays them out (kind 'payout').
-- One suspense account per tenant, region and currency: id sus_<region>_<currency>_<tenant hex>.
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (kind IN ('customer', 'external', 'suspense'));
CREATE INDEX accounts_suspense ON accounts (id) WHERE kind = 'suspense';

ALTER TABLE transfers DROP CONSTRAINT transfers_kind_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_kind_check
  CHECK (kind IN ('transfer', 'deposit', 'withdrawal', 'capture', 'refund', 'suspense', 'payout'));
