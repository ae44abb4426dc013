-- Tenants, API keys and their limits live in the control database (CONTROL_DATABASE_URL),
-- accounts in their region's database: a foreign key cannot span the two, so accounts no
-- longer reference tenants. Nothing is lost by it: an account is only ever opened under a
-- tenant key, whose principal names an existing tenant, and every read checks the account's
-- tenant against the principal's. api_keys -> tenants stays: both are control-plane tables.
-- Migrations run on every database, so a region database keeps empty control tables and the
-- control database empty payment tables; each node uses only its own side of each.
ALTER TABLE accounts DROP CONSTRAINT IF EXISTS accounts_tenant_id_fkey;
