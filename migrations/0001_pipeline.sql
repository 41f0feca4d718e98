-- The seed's three tables (same names and columns), with better types and the columns iotstream
-- adds, plus the dead-letter table.
--
-- Types: values are DOUBLE PRECISION (the seed's NUMERIC(10,2) rounds raw readings and overflows
-- above 1e8); times are TIMESTAMPTZ (UTC, unambiguous for a data engineer).

CREATE TABLE sensor_readings (
    id              BIGSERIAL PRIMARY KEY,
    sensor_id       VARCHAR(100) NOT NULL,
    sensor_type     VARCHAR(50)  NOT NULL,
    location        VARCHAR(100) NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    timestamp       TIMESTAMPTZ  NOT NULL,
    -- The source's own anomaly flag (the seed's "rule-based anomaly flag"; the simulator's label).
    anomaly         BOOLEAN      NOT NULL DEFAULT FALSE,
    unit            VARCHAR(20)  NOT NULL,
    -- Whether any detector plugin flagged the reading.
    flagged         BOOLEAN      NOT NULL DEFAULT FALSE,
    kafka_partition INTEGER      NOT NULL,
    kafka_offset    BIGINT       NOT NULL,
    ingested_at     TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX sensor_readings_timestamp ON sensor_readings (timestamp);
CREATE INDEX sensor_readings_sensor_timestamp ON sensor_readings (sensor_id, timestamp);
CREATE INDEX sensor_readings_flagged ON sensor_readings (timestamp) WHERE flagged;

CREATE TABLE sensor_aggregates (
    id              BIGSERIAL PRIMARY KEY,
    -- The aggregator plugin that emitted the window.
    stage           VARCHAR(100) NOT NULL,
    window_start    TIMESTAMPTZ  NOT NULL,
    window_end      TIMESTAMPTZ  NOT NULL,
    location        VARCHAR(100) NOT NULL,
    sensor_type     VARCHAR(50)  NOT NULL,
    avg_value       DOUBLE PRECISION NOT NULL,
    min_value       DOUBLE PRECISION NOT NULL,
    max_value       DOUBLE PRECISION NOT NULL,
    -- Population standard deviation.
    stddev_value    DOUBLE PRECISION NOT NULL,
    count_readings  INTEGER      NOT NULL,
    anomaly_count   INTEGER      NOT NULL,
    -- 0 for a window's first emission; late readings re-emit it with the next revision, which
    -- supersedes the earlier ones (sensor_aggregates_latest keeps only the newest).
    revision        INTEGER      NOT NULL DEFAULT 0,
    -- Readings in count_readings that arrived after the watermark had passed the window's end.
    late_count      INTEGER      NOT NULL DEFAULT 0,
    emitted_at      TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX sensor_aggregates_window_start ON sensor_aggregates (window_start);
CREATE INDEX sensor_aggregates_group ON sensor_aggregates (location, sensor_type, window_start);

-- Each window once, at its newest revision.
CREATE VIEW sensor_aggregates_latest AS
SELECT DISTINCT ON (stage, location, sensor_type, window_start) *
FROM sensor_aggregates
ORDER BY stage, location, sensor_type, window_start, revision DESC, id DESC;

CREATE TABLE ml_anomaly_predictions (
    id                 BIGSERIAL PRIMARY KEY,
    -- The detector plugin that judged the reading (the seed had only its Isolation Forest).
    detector           VARCHAR(100) NOT NULL,
    sensor_id          VARCHAR(100) NOT NULL,
    sensor_type        VARCHAR(50)  NOT NULL,
    value              DOUBLE PRECISION NOT NULL,
    timestamp          TIMESTAMPTZ  NOT NULL,
    -- warming_up, normal or anomaly.
    verdict            VARCHAR(16)  NOT NULL,
    is_anomaly         BOOLEAN      NOT NULL,
    anomaly_score      DOUBLE PRECISION NOT NULL,
    -- The source's own anomaly flag of the reading (the seed's "original rule flag").
    rule_based_anomaly BOOLEAN      NOT NULL,
    -- Lineage: the detector plugin's version, and for a detector that trains models, the model
    -- (its generation, the event time of the newest reading it was trained with, its training rows).
    detector_version    VARCHAR(50) NOT NULL DEFAULT '',
    model_generation    INTEGER,
    model_trained_at    TIMESTAMPTZ,
    model_training_rows INTEGER,
    kafka_partition    INTEGER      NOT NULL,
    kafka_offset       BIGINT       NOT NULL
);
CREATE INDEX ml_anomaly_predictions_timestamp ON ml_anomaly_predictions (timestamp);
CREATE INDEX ml_anomaly_predictions_detector_timestamp ON ml_anomaly_predictions (detector, timestamp);
CREATE INDEX ml_anomaly_predictions_anomalies ON ml_anomaly_predictions (timestamp) WHERE is_anomaly;
-- Pairs the verdicts of different detectors on one reading (detector agreement).
CREATE INDEX ml_anomaly_predictions_reading ON ml_anomaly_predictions (sensor_id, timestamp);

-- Messages that did not decode or validate, with the reason: counted, kept, never silently dropped.
CREATE TABLE dead_letters (
    id              BIGSERIAL PRIMARY KEY,
    received_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    topic           VARCHAR(255) NOT NULL,
    kafka_partition INTEGER      NOT NULL,
    kafka_offset    BIGINT       NOT NULL,
    message_key     BYTEA,
    -- At most 64 KiB of the payload.
    payload         BYTEA,
    error           TEXT         NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
