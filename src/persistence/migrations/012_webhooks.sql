-- Webhooks (docs/webhooks.md): a tenant's endpoints, one delivery per (endpoint, event) and
-- every attempt of it. A delivery's id is its webhook-id, the same on every attempt. The three
-- tables live in one database (a delivery references its endpoint); tenants are not referenced,
-- for the reason 010 gives for accounts. All times are the dispatcher's clock, passed in.
CREATE TABLE webhook_endpoints (
  id                         text PRIMARY KEY CHECK (id ~ '^we_[0-9a-f]{32}$'),
  tenant_id                  text NOT NULL,
  url                        text NOT NULL,
  -- Empty: every event type.
  event_types                text[] NOT NULL DEFAULT '{}',
  -- whsec_ secrets. Stored as they are: signing needs the key itself, a hash would not do.
  secret                     text NOT NULL,
  previous_secret            text,
  previous_secret_expires_at timestamptz,
  disabled_at                timestamptz,
  disabled_reason            text,
  deleted_at                 timestamptz,
  created_at                 timestamptz NOT NULL,
  CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL)),
  CHECK ((disabled_at IS NULL) = (disabled_reason IS NULL))
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
  id               text PRIMARY KEY CHECK (id ~ '^msg_[0-9a-f]{32}$'),
  endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id),
  event_id         text NOT NULL,
  event_type       text NOT NULL,
  -- The account whose journal produced the event and the event's seq there: deliveries of one
  -- account to one endpoint are attempted in seq order. Both null: no order to keep.
  account_id       text,
  seq              bigint CHECK (seq >= 1),
  payload          jsonb NOT NULL,
  state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'disabled')),
  -- Every attempt ever made (numbers the attempts); the cycle counters restart on a redelivery
  -- and drive the backoff and the horizon.
  attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  cycle_attempts   integer NOT NULL DEFAULT 0 CHECK (cycle_attempts >= 0 AND cycle_attempts <= attempts),
  cycle_started_at timestamptz NOT NULL,
  last_delay_ms    bigint CHECK (last_delay_ms >= 0),
  -- While pending: when it is due, or, once claimed, when the claim lapses.
  next_attempt_at  timestamptz,
  last_status      integer,
  created_at       timestamptz NOT NULL,
  delivered_at     timestamptz,
  UNIQUE (endpoint_id, event_id),
  CHECK ((account_id IS NULL) = (seq IS NULL)),
  CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL)),
  CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
-- The claim's "no earlier pending delivery of this account to this endpoint".
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, account_id, seq, id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  delivery_id      text NOT NULL REFERENCES webhook_deliveries (id),
  -- Denormalized from the delivery, for an endpoint's attempts newest first without a join.
  endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id),
  attempt          integer NOT NULL CHECK (attempt >= 1),
  at               timestamptz NOT NULL,
  status           integer,
  duration_ms      integer NOT NULL CHECK (duration_ms >= 0),
  error            text,
  response_excerpt text,
  UNIQUE (delivery_id, attempt)
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);
