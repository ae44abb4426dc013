-- The batch commit is one statement (one round trip, one transaction). This check is its last
-- step: it aborts the whole statement when the shard's epoch is no longer the writer's
-- (GP001, fenced) or when a conditional write matched fewer rows than expected (GP002).
CREATE FUNCTION geopay_commit_check(guard bigint, updated bigint, expected_updates integer, keys bigint, expected_keys integer)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  IF guard <> 1 THEN
    RAISE EXCEPTION 'shard epoch moved' USING ERRCODE = 'GP001';
  END IF;
  IF updated <> expected_updates OR keys <> expected_keys THEN
    RAISE EXCEPTION 'conditional write lost a race' USING ERRCODE = 'GP002';
  END IF;
  RETURN 1;
END $$;
