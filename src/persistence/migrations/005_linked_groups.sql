-- Linked batch groups: all of a group's transfers happen or none does. Each item first holds
-- its amount (tagged with the group); one row here decides the group. Whoever inserts it
-- first wins: the coordinator ('commit', then captures) or the expiry sweeper ('abort', then
-- releases). A decided commit is completed by the sweeper if the coordinator died.
ALTER TABLE holds ADD COLUMN group_id text;
CREATE INDEX holds_group ON holds (group_id) WHERE group_id IS NOT NULL;

CREATE TABLE linked_groups (
  id         text PRIMARY KEY,
  decision   text NOT NULL CHECK (decision IN ('commit', 'abort')),
  created_at timestamptz NOT NULL DEFAULT now()
);
