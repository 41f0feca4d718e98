-- Effectively-once delivery from Kafka (docs/guarantees.md): where each source stands, keys that
-- make a replayed message a no-op, and checkpoints of the stages' state.

-- A Kafka topic on one cluster. Offsets only mean something within one cluster's log (the embedded
-- broker starts a new, empty log on each run), so every row written from Kafka names its source.
CREATE TABLE kafka_sources (
    id         SMALLSERIAL  PRIMARY KEY,
    -- The cluster id the brokers report (for the embedded broker: one per run).
    cluster_id VARCHAR(255) NOT NULL,
    topic      VARCHAR(255) NOT NULL,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    UNIQUE (cluster_id, topic)
);

-- The next offset to read of each partition: advanced in the transaction that stores the batch,
-- never moved back. This, not the consumer group's commit, is where the host resumes.
CREATE TABLE kafka_offsets (
    source_id       SMALLINT    NOT NULL REFERENCES kafka_sources (id),
    kafka_partition INTEGER     NOT NULL,
    next_offset     BIGINT      NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, kafka_partition)
);

-- Rows written before this migration have source 0 and no uniqueness (they may hold the duplicates
-- of at-least-once delivery); every new row is unique per message.
ALTER TABLE sensor_readings ADD COLUMN source_id SMALLINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX sensor_readings_message ON sensor_readings (source_id, kafka_partition, kafka_offset)
    WHERE source_id > 0;

ALTER TABLE ml_anomaly_predictions ADD COLUMN source_id SMALLINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX ml_anomaly_predictions_message
    ON ml_anomaly_predictions (source_id, kafka_partition, kafka_offset, detector) WHERE source_id > 0;

ALTER TABLE dead_letters ADD COLUMN source_id SMALLINT NOT NULL DEFAULT 0;
-- The kind of refusal (malformed, out_of_range, too_old, ...), to count them by; `error` says more.
ALTER TABLE dead_letters ADD COLUMN reason VARCHAR(32) NOT NULL DEFAULT 'unknown';
CREATE UNIQUE INDEX dead_letters_message ON dead_letters (source_id, kafka_partition, kafka_offset)
    WHERE source_id > 0;

-- A window revision emitted again after a crash replaces the earlier emission of that revision.
-- `emission` orders emissions: the newest emission of a window holds every reading processed so
-- far, so it (not the highest revision number, which a replay may reach by another path) is the
-- window's current value.
ALTER TABLE sensor_aggregates ADD COLUMN source_id SMALLINT NOT NULL DEFAULT 0;
CREATE SEQUENCE sensor_aggregates_emission;
ALTER TABLE sensor_aggregates ADD COLUMN emission BIGINT NOT NULL DEFAULT nextval('sensor_aggregates_emission');
UPDATE sensor_aggregates SET emission = id;
SELECT setval('sensor_aggregates_emission', GREATEST((SELECT max(id) FROM sensor_aggregates), 1));
CREATE UNIQUE INDEX sensor_aggregates_revision
    ON sensor_aggregates (source_id, stage, location, sensor_type, window_start, revision) WHERE source_id > 0;

CREATE OR REPLACE VIEW sensor_aggregates_latest AS
SELECT DISTINCT ON (stage, location, sensor_type, window_start) *
FROM sensor_aggregates
ORDER BY stage, location, sensor_type, window_start, emission DESC;

-- Checkpoints: every stateful stage's exported state, the host's sensor catalog (the keys the states
-- refer to) and the offsets the states include everything before. Written in the transaction of
-- the batch they follow; the newest few are kept.
CREATE TABLE stage_checkpoints (
    id          BIGSERIAL   PRIMARY KEY,
    source_id   SMALLINT    NOT NULL REFERENCES kafka_sources (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- interval or shutdown.
    reason      VARCHAR(16) NOT NULL,
    -- Parallel arrays: partition i's next offset.
    partitions  INTEGER[]   NOT NULL,
    offsets     BIGINT[]    NOT NULL,
    -- The sensor catalog (the keys the states use): key i is sensor_ids[i], sensor_types[i],
    -- locations[i].
    sensor_ids   TEXT[]     NOT NULL,
    sensor_types TEXT[]     NOT NULL,
    locations    TEXT[]     NOT NULL
);
CREATE INDEX stage_checkpoints_source ON stage_checkpoints (source_id, id);

CREATE TABLE stage_checkpoint_states (
    checkpoint_id BIGINT       NOT NULL REFERENCES stage_checkpoints (id) ON DELETE CASCADE,
    stage         VARCHAR(100) NOT NULL,
    stage_version VARCHAR(50)  NOT NULL,
    state_version INTEGER      NOT NULL,
    state         BYTEA        NOT NULL,
    PRIMARY KEY (checkpoint_id, stage)
);
