-- Holds (two-phase payments) and refunds. A hold reserves money on its source account; its
-- life is journaled on that account (hold, capture, release) with the change of the held
-- total beside the change of the balance. Captures and refunds are transfers of their own.

ALTER TABLE journal
  ADD COLUMN hold_id    text,
  ADD COLUMN held_delta bigint NOT NULL DEFAULT 0,
  ADD COLUMN held_after bigint NOT NULL DEFAULT 0;

ALTER TABLE transfers DROP CONSTRAINT transfers_kind_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_kind_check CHECK (kind IN ('transfer', 'deposit', 'withdrawal', 'capture', 'refund'));
ALTER TABLE transfers
  ADD COLUMN hold_id   text,
  ADD COLUMN refund_of text,
  -- Sum of the refunds taken from this transfer; never above its amount.
  ADD COLUMN refunded  bigint NOT NULL DEFAULT 0,
  ADD CONSTRAINT transfers_refunded_bound CHECK (refunded >= 0 AND refunded <= amount);
CREATE INDEX transfers_refund_of ON transfers (refund_of) WHERE refund_of IS NOT NULL;

CREATE TABLE holds (
  id             text PRIMARY KEY,
  tenant_id      text,
  source_id      text NOT NULL,
  destination_id text NOT NULL,
  amount         bigint NOT NULL CHECK (amount > 0),
  captured       bigint NOT NULL DEFAULT 0,
  currency       char(3) NOT NULL,
  multi_capture  boolean NOT NULL,
  state          text NOT NULL CHECK (state IN ('held', 'captured', 'voided', 'expired')),
  expires_at     timestamptz NOT NULL,
  metadata       jsonb,
  created_at     timestamptz NOT NULL,
  updated_at     timestamptz NOT NULL,
  CHECK (captured >= 0 AND captured <= amount)
);
CREATE INDEX holds_expiry ON holds (expires_at) WHERE state = 'held';
