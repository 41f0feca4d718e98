-- 1. One row per reading: the detectors' verdicts move into the reading's own row.
--
-- Before, every verdict was a row of ml_anomaly_predictions, with a primary key and four indexes:
-- with three detectors a reading cost four heap rows and about twenty index insertions, and the
-- database's one backend per batch transaction was the pipeline's critical path (docs/performance.md:
-- 54 µs of server CPU a reading). Now a reading is one row and its verdicts a JSONB array in it,
-- one object per detector:
--
--   {"d": detector, "ver": its version, "v": verdict, "s": score,
--    "g": model generation, "t": model trained at, "n": model training rows}   (g, t, n only for a
--                                                                               detector with models)
--
-- ml_anomaly_predictions stays, as a view with the seed's columns and the lineage columns, so what
-- read the table (the API, the dashboard, operators' SQL) reads the same rows. Its id is the
-- reading's id (the verdicts of one reading share it).
--
-- 2. Tables that stay small: sensor_readings (with its verdicts) and dead_letters are partitioned by
-- day (UTC), so that retention drops whole days (`DROP TABLE` of a partition: no DELETE, no
-- vacuum, no bloat) and queries over a time range read only its days.
--
-- * sensor_readings by event time (`timestamp`). Its unique message index must hold the partition
--   key, so it is (source_id, kafka_partition, kafka_offset, timestamp): a message decodes to the
--   same event time every time it is read, so a replayed message still stores nothing.
-- * dead_letters by `received_at`. A dead letter may have no valid event time, and a replayed one
--   is received again at another time, so its message index is not unique: the host inserts a
--   dead letter only when no row of its message exists (one writer per source, see
--   store/ownership.rs, so the check cannot race).
--
-- Each table has a default partition, so that no row is ever refused for want of its day's
-- partition (a row inserted by hand, a day dropped while a replay stores it). The host creates
-- each day's partitions ahead (today and the next two days, the days of every batch it writes, and
-- the days of rows found in the default partition, which move into theirs) with
-- iotstream_ensure_day_partition, and drops (iotstream_drop_day_partition) the days older than
-- its retention settings (--keep-readings, --keep-dead-letters). Windows (sensor_aggregates, one row
-- per window) are not partitioned: they are kept.

-- Makes `parent`'s partition of `day` (UTC) unless it exists; returns whether it made it. Rows of
-- that day that went to the default partition meanwhile (inserted by hand, or while the day had
-- no partition) move into it.
CREATE FUNCTION iotstream_ensure_day_partition(parent TEXT, day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    partition TEXT := parent || '_' || to_char(day, 'YYYYMMDD');
    fallback  TEXT := parent || '_default';
    low       TIMESTAMPTZ := day::timestamp AT TIME ZONE 'UTC';
    high      TIMESTAMPTZ := (day + 1)::timestamp AT TIME ZONE 'UTC';
    key       TEXT;
    stranded  BOOLEAN;
BEGIN
    IF to_regclass(partition) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname INTO key FROM pg_partitioned_table p
        JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
        WHERE p.partrelid = parent::regclass;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= %L AND %I < %L)', fallback, key, low, key, high)
        INTO stranded;
    IF stranded THEN
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', partition, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       fallback, key, low, key, high, partition);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, partition, low, high);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', partition, parent, low, high);
    END IF;
    RETURN true;
END
$$;

CREATE FUNCTION iotstream_drop_day_partition(parent TEXT, day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    partition TEXT := parent || '_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(partition) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', partition);
    RETURN true;
END
$$;

-- sensor_readings

ALTER TABLE sensor_readings RENAME TO sensor_readings_0007;
ALTER SEQUENCE sensor_readings_id_seq OWNED BY NONE;
ALTER INDEX sensor_readings_pkey RENAME TO sensor_readings_0007_pkey;
ALTER INDEX sensor_readings_timestamp RENAME TO sensor_readings_0007_timestamp;
ALTER INDEX sensor_readings_sensor_timestamp RENAME TO sensor_readings_0007_sensor_timestamp;
ALTER INDEX sensor_readings_flagged RENAME TO sensor_readings_0007_flagged;
ALTER INDEX sensor_readings_message RENAME TO sensor_readings_0007_message;

CREATE TABLE sensor_readings (
    id              BIGINT       NOT NULL DEFAULT nextval('sensor_readings_id_seq'),
    sensor_id       VARCHAR(100) NOT NULL,
    sensor_type     VARCHAR(50)  NOT NULL,
    location        VARCHAR(100) NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    timestamp       TIMESTAMPTZ  NOT NULL,
    anomaly         BOOLEAN      NOT NULL DEFAULT FALSE,
    unit            VARCHAR(20)  NOT NULL,
    flagged         BOOLEAN      NOT NULL DEFAULT FALSE,
    kafka_partition INTEGER      NOT NULL,
    kafka_offset    BIGINT       NOT NULL,
    ingested_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    source_id       SMALLINT     NOT NULL DEFAULT 0,
    verdicts        JSONB        NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (id, timestamp)
) PARTITION BY RANGE (timestamp);
ALTER SEQUENCE sensor_readings_id_seq OWNED BY sensor_readings.id;
CREATE INDEX sensor_readings_timestamp ON sensor_readings (timestamp);
CREATE INDEX sensor_readings_sensor_timestamp ON sensor_readings (sensor_id, timestamp);
CREATE INDEX sensor_readings_flagged ON sensor_readings (timestamp) WHERE flagged;
CREATE UNIQUE INDEX sensor_readings_message ON sensor_readings (source_id, kafka_partition, kafka_offset, timestamp)
    WHERE source_id > 0;
CREATE TABLE sensor_readings_default PARTITION OF sensor_readings DEFAULT;

SELECT iotstream_ensure_day_partition('sensor_readings', day)
FROM (SELECT DISTINCT (timestamp AT TIME ZONE 'UTC')::date AS day FROM sensor_readings_0007) days;
-- Each reading with its verdicts, gathered from the old ml_anomaly_predictions rows of its message.
INSERT INTO sensor_readings
SELECT r.id, r.sensor_id, r.sensor_type, r.location, r.value, r.timestamp, r.anomaly, r.unit, r.flagged,
       r.kafka_partition, r.kafka_offset, r.ingested_at, r.source_id, COALESCE(p.verdicts, '[]'::jsonb)
FROM sensor_readings_0007 r
LEFT JOIN (
    SELECT source_id, kafka_partition, kafka_offset, sensor_id, timestamp,
           jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
               'd', detector, 'ver', detector_version, 'v', verdict, 's', anomaly_score,
               'g', model_generation, 't', model_trained_at, 'n', model_training_rows)) ORDER BY detector) AS verdicts
    FROM ml_anomaly_predictions
    GROUP BY source_id, kafka_partition, kafka_offset, sensor_id, timestamp
) p ON r.source_id = p.source_id AND r.kafka_partition = p.kafka_partition AND r.kafka_offset = p.kafka_offset
   AND r.sensor_id = p.sensor_id AND r.timestamp = p.timestamp;
DROP TABLE ml_anomaly_predictions;
DROP TABLE sensor_readings_0007;

-- The seed's table, as a view: a row per verdict.
CREATE VIEW ml_anomaly_predictions AS
SELECT r.id,
       v.d::VARCHAR(100)           AS detector,
       r.sensor_id,
       r.sensor_type,
       r.value,
       r.timestamp,
       v.v::VARCHAR(16)            AS verdict,
       v.v = 'anomaly'             AS is_anomaly,
       v.s                         AS anomaly_score,
       r.anomaly                   AS rule_based_anomaly,
       COALESCE(v.ver, '')::VARCHAR(50) AS detector_version,
       v.g                         AS model_generation,
       v.t                         AS model_trained_at,
       v.n                         AS model_training_rows,
       r.kafka_partition,
       r.kafka_offset,
       r.source_id
FROM sensor_readings r
CROSS JOIN LATERAL jsonb_to_recordset(r.verdicts) AS v(d TEXT, ver TEXT, v TEXT, s DOUBLE PRECISION, g INTEGER,
                                                      t TIMESTAMPTZ, n INTEGER);

-- dead_letters

ALTER TABLE dead_letters RENAME TO dead_letters_0007;
ALTER SEQUENCE dead_letters_id_seq OWNED BY NONE;
ALTER INDEX dead_letters_pkey RENAME TO dead_letters_0007_pkey;
ALTER INDEX dead_letters_received_at RENAME TO dead_letters_0007_received_at;
ALTER INDEX dead_letters_message RENAME TO dead_letters_0007_message;

CREATE TABLE dead_letters (
    id              BIGINT       NOT NULL DEFAULT nextval('dead_letters_id_seq'),
    received_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    topic           VARCHAR(255) NOT NULL,
    kafka_partition INTEGER      NOT NULL,
    kafka_offset    BIGINT       NOT NULL,
    message_key     BYTEA,
    payload         BYTEA,
    error           TEXT         NOT NULL,
    source_id       SMALLINT     NOT NULL DEFAULT 0,
    reason          VARCHAR(32)  NOT NULL DEFAULT 'unknown',
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
ALTER SEQUENCE dead_letters_id_seq OWNED BY dead_letters.id;
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
CREATE INDEX dead_letters_message ON dead_letters (source_id, kafka_partition, kafka_offset);
CREATE TABLE dead_letters_default PARTITION OF dead_letters DEFAULT;

SELECT iotstream_ensure_day_partition('dead_letters', day)
FROM (SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date AS day FROM dead_letters_0007
      UNION SELECT (now() AT TIME ZONE 'UTC')::date + ahead FROM generate_series(0, 2) ahead) days;
INSERT INTO dead_letters SELECT id, received_at, topic, kafka_partition, kafka_offset, message_key, payload, error,
    source_id, reason FROM dead_letters_0007;
DROP TABLE dead_letters_0007;

-- 3. The all-time row counts the dashboard shows, kept by the batch transactions (one row per
-- source, so hosts of different sources never wait on each other's row), instead of counted at
-- every start: a count(*) of a table of 100 million rows held a host's start for seconds.
CREATE TABLE stored_totals (
    source_id    SMALLINT PRIMARY KEY,
    readings     BIGINT NOT NULL DEFAULT 0,
    flagged      BIGINT NOT NULL DEFAULT 0,
    aggregates   BIGINT NOT NULL DEFAULT 0,
    dead_letters BIGINT NOT NULL DEFAULT 0
);
INSERT INTO stored_totals (source_id, readings, flagged, aggregates, dead_letters)
SELECT source_id, sum(readings), sum(flagged), sum(aggregates), sum(dead_letters) FROM (
    SELECT source_id, count(*) AS readings, count(*) FILTER (WHERE flagged) AS flagged, 0 AS aggregates, 0 AS dead_letters
    FROM sensor_readings GROUP BY source_id
    UNION ALL SELECT source_id, 0, 0, count(*), 0 FROM sensor_aggregates GROUP BY source_id
    UNION ALL SELECT source_id, 0, 0, 0, count(*) FROM dead_letters GROUP BY source_id
) counts GROUP BY source_id;
