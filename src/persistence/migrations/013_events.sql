-- The ledger event stream's outbox (docs/architecture.md, "Ledger events"): every committed
-- change (a posting, a transfer's state, a hold's state) is a row here, written by the same
-- commit statement as the change. An event belongs to the account whose actor committed it.
--
-- Two orders, each safe to resume from:
-- * per account, `n`: 1, 2, 3, ... as the account's actor committed its events, numbered by the
--   commit statement from the account's last (one commit of an account in flight at a time, so
--   no gap and no reuse; a collision would be a second writer: the batch reloads and redoes).
-- * per region database, (commit_xid, ord): the committing transaction's id and the event's
--   place in that statement. Concurrent commits finish in any order, so a reader takes only
--   events of transactions older than every one still running (pg_snapshot_xmin): whatever
--   commits later has a larger position than anything already read. The tenant feed and the
--   publishers' per-shard cursors read this order.
CREATE TABLE ledger_events (
  account_id text NOT NULL,
  n          bigint NOT NULL CHECK (n >= 1),
  commit_xid xid8 NOT NULL,
  ord        integer NOT NULL CHECK (ord >= 1),
  -- The account's shard: a publisher works on the shards its node owns.
  shard      text NOT NULL,
  -- The tenant shown the event: a customer account's; null for the ledger's own accounts.
  tenant_id  text,
  type       text NOT NULL CHECK (type IN ('posting.created', 'transfer.debited', 'transfer.settled', 'transfer.refused',
    'transfer.returned', 'hold.authorized', 'hold.captured', 'hold.voided', 'hold.expired')),
  -- The account's journal seq after the event (the last posting's for an event that posts nothing).
  seq        bigint NOT NULL CHECK (seq >= 1),
  -- What a client sees: the posting, the transfer or the hold as the event left it.
  payload    jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (account_id, n)
);
CREATE INDEX ledger_events_tenant ON ledger_events (tenant_id, commit_xid, ord) WHERE tenant_id IS NOT NULL;
CREATE INDEX ledger_events_shard ON ledger_events (shard, commit_xid, ord);

-- How far each consumer (a publisher to the bus, say) has taken each shard's events, in the
-- region order above. It only moves forward; a consumer that crashed before moving it takes
-- those events again: at least once, deduplicated downstream by the event id.
CREATE TABLE ledger_event_cursors (
  consumer   text NOT NULL,
  shard      text NOT NULL,
  commit_xid xid8 NOT NULL,
  ord        integer NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, shard)
);
