-- The shard map is fixed for the life of a database: an account's shard is its id hashed
-- into SHARD_BUCKETS buckets, and two bucket counts would put one account in two shards under
-- two epochs (two writers). The first start pins its count here; a node configured with
-- another refuses to start (src/persistence/shard-map.ts, src/node.ts).
CREATE TABLE cluster_settings (
  singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  shard_buckets integer NOT NULL CHECK (shard_buckets > 0),
  pinned_at     timestamptz NOT NULL DEFAULT now()
);
