-- The operational view of hosts sharing a topic (docs/metrics.md, "The consumer group"): which host
-- owns each partition and how far behind it is, and the group's recent rebalances, so an operator
-- sees on any host's dashboard (GET /api/partitions) what every host of the group is doing.

-- Each host reports its own partitions' consumer lag (messages behind the partition's end, as
-- librdkafka last measured it) every few seconds, on the rows it owns: a row whose owner stopped
-- reporting keeps its last lag, and lag_at says how old it is.
ALTER TABLE partition_owners ADD COLUMN lag BIGINT;
ALTER TABLE partition_owners ADD COLUMN lag_at TIMESTAMPTZ;

-- The rebalances each host went through: the partitions the group gave it and took from it, and
-- how long its pipeline stood still for it. Kept small: every insert prunes its source's rows older
-- than a week and beyond the newest thousand (store/cluster.rs).
CREATE TABLE rebalances (
    id         BIGSERIAL   PRIMARY KEY,
    -- The source's first id (its lineage), as in partition_owners.
    source_id  SMALLINT    NOT NULL REFERENCES kafka_sources (id),
    -- The host as it names itself (--host-name).
    host       TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    assigned   INTEGER[]   NOT NULL,
    revoked    INTEGER[]   NOT NULL,
    -- How long the host's pipeline was stopped for it, in milliseconds (NULL: not measured).
    pause_ms   DOUBLE PRECISION
);
CREATE INDEX rebalances_source ON rebalances (source_id, id);
