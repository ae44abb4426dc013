-- A cross-region transfer's row lives in its source region's database; the destination's
-- region keeps its leg here, once per transfer: credited, or refused with the code. A
-- redelivered leg finds it and is answered with the outcome committed first; the source's
-- region then moves the transfer row (settled, or refused and returned). A refund of the
-- transfer, decided by the destination account's owner, claims against `refunded` here.
CREATE TABLE inbound_legs (
  transfer_id  text PRIMARY KEY,
  account_id   text NOT NULL,
  outcome      text NOT NULL CHECK (outcome IN ('credited', 'refused')),
  refusal_code text,
  amount       bigint NOT NULL CHECK (amount >= 0),
  currency     char(3) NOT NULL,
  refunded     bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= amount),
  created_at   timestamptz NOT NULL
);
CREATE INDEX inbound_legs_account ON inbound_legs (account_id);
