-- Per-tenant rate-limit overrides, in requests per second; NULL: the node's default
-- (RATE_LIMIT_READS_PER_S, RATE_LIMIT_WRITES_PER_S). Set by PUT /v1/tenants/:id/limits.

ALTER TABLE tenants
  ADD COLUMN reads_per_s  integer CHECK (reads_per_s BETWEEN 1 AND 1000000),
  ADD COLUMN writes_per_s integer CHECK (writes_per_s BETWEEN 1 AND 1000000);
