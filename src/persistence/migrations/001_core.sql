-- Core schema: tenants and keys, shard epochs (the fence), the account directory, the
-- journal of immutable postings, snapshots, transfers (the saga's outbox) and idempotency keys.

CREATE TABLE tenants (
  id         text PRIMARY KEY,
  name       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id         text PRIMARY KEY,
  tenant_id  text REFERENCES tenants (id),
  role       text NOT NULL CHECK (role IN ('admin', 'tenant')),
  key_hash   text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz,
  CHECK ((role = 'admin') = (tenant_id IS NULL))
);

-- One row per shard; epoch only ever grows. Every write of a shard checks it.
CREATE TABLE shards (
  id         text PRIMARY KEY,
  region     text NOT NULL,
  bucket     integer NOT NULL,
  epoch      bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
  owner      text,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The immutable attributes of an account; its state lives in the journal and snapshots.
CREATE TABLE accounts (
  id              text PRIMARY KEY,
  tenant_id       text REFERENCES tenants (id),
  kind            text NOT NULL CHECK (kind IN ('customer', 'external')),
  currency        char(3) NOT NULL,
  region          text NOT NULL,
  shard           text NOT NULL,
  overdraft_limit bigint NOT NULL CHECK (overdraft_limit >= 0),
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL
);
CREATE INDEX accounts_tenant ON accounts (tenant_id);

CREATE TABLE journal (
  account_id    text NOT NULL,
  seq           bigint NOT NULL CHECK (seq >= 1),
  kind          text NOT NULL,
  transfer_id   text,
  amount        bigint NOT NULL,
  balance_after bigint NOT NULL,
  epoch         bigint NOT NULL,
  node_id       text NOT NULL,
  created_at    timestamptz NOT NULL,
  PRIMARY KEY (account_id, seq)
);
-- A transfer has one debit, at most one credit and at most one return: the database
-- itself refuses a second application.
CREATE UNIQUE INDEX journal_transfer_once ON journal (transfer_id, kind) WHERE transfer_id IS NOT NULL;

CREATE TABLE snapshots (
  account_id text PRIMARY KEY,
  seq        bigint NOT NULL,
  state      jsonb NOT NULL,
  epoch      bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE transfers (
  id             text PRIMARY KEY,
  tenant_id      text,
  kind           text NOT NULL CHECK (kind IN ('transfer', 'deposit', 'withdrawal')),
  source_id      text NOT NULL,
  destination_id text NOT NULL,
  amount         bigint NOT NULL CHECK (amount > 0),
  currency       char(3) NOT NULL,
  state          text NOT NULL CHECK (state IN ('debited', 'settled', 'refused', 'returned')),
  refusal_code   text,
  metadata       jsonb,
  created_at     timestamptz NOT NULL,
  updated_at     timestamptz NOT NULL
);
CREATE INDEX transfers_in_flight ON transfers (updated_at) WHERE state IN ('debited', 'refused');

CREATE TABLE idempotency_keys (
  tenant_id    text NOT NULL,
  key          text NOT NULL,
  request_hash text NOT NULL,
  resource_id  text,
  status_code  integer,
  response     jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
