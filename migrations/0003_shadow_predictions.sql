-- Shadow runs: the verdicts of a detector loaded as the shadow of a live one (`shadow_of` in its
-- manifest). Kept apart from ml_anomaly_predictions so nothing downstream mistakes them for live
-- verdicts; /api/shadows compares the two per reading.
CREATE TABLE shadow_predictions (
    id              BIGSERIAL    PRIMARY KEY,
    -- The shadow plugin, its version, and the live detector it shadows.
    shadow          VARCHAR(100) NOT NULL,
    shadow_version  VARCHAR(50)  NOT NULL,
    live_detector   VARCHAR(100) NOT NULL,
    sensor_id       VARCHAR(100) NOT NULL,
    sensor_type     VARCHAR(50)  NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    timestamp       TIMESTAMPTZ  NOT NULL,
    verdict         VARCHAR(16)  NOT NULL,
    is_anomaly      BOOLEAN      NOT NULL,
    anomaly_score   DOUBLE PRECISION NOT NULL,
    source_id       SMALLINT     NOT NULL,
    kafka_partition INTEGER      NOT NULL,
    kafka_offset    BIGINT       NOT NULL
);
CREATE UNIQUE INDEX shadow_predictions_message
    ON shadow_predictions (source_id, kafka_partition, kafka_offset, shadow) WHERE source_id > 0;
