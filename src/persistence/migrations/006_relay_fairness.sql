-- The relay's and the hold sweeper's work lists: only the shards a node owns (by the source
-- account's shard, joined from accounts), due first, on the database's clock. A row a pass
-- picked waits a backoff before it is picked again, so rows that cannot move (a region down)
-- go to the back of the line instead of filling every pass.

-- When the transfer entered its current state, by the database's clock: updated_at is the
-- writing node's clock, which may be off. Rows in flight at the upgrade count from it.
ALTER TABLE transfers
  ADD COLUMN state_since     timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN next_attempt_at timestamptz,
  ADD COLUMN relay_attempts  integer NOT NULL DEFAULT 0;
CREATE INDEX transfers_relay_due ON transfers ((COALESCE(next_attempt_at, state_since))) WHERE state IN ('debited', 'refused');

ALTER TABLE holds
  ADD COLUMN next_attempt_at timestamptz,
  ADD COLUMN sweep_attempts  integer NOT NULL DEFAULT 0;
