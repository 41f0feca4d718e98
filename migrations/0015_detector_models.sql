-- Verdicts as references to the models behind them (docs/performance.md). Storing a reading was
-- the pipeline's critical path, and a reading's verdicts were most of its row: every verdict
-- carried its detector's name and version and its model's generation, training time and rows, as
-- JSON keys and text (about 300 bytes for three detectors, against about 100 for the rest of the
-- row), all of it the same for every reading a model judged. Measured here (200,000 readings with
-- three verdicts each, one COPY of 2,000 rows a transaction): 1.88 s, against 1.53 s with the
-- verdicts as model references and 1.40 s with none.
--
-- Now each detector version, and each model it trained, is one row of `detector_models`, and a
-- reading's `verdicts` is a JSON array of `[model, verdict, score]`: `model` is a
-- `detector_models.id`, `verdict` 0 (warming_up), 1 (normal) or 2 (anomaly), `score` a number or
-- null. `ml_anomaly_predictions` reads as before. A model's id is a hash of what it is
-- (`iotstream_detector_model_id`, computed by the host the same way), so every host, a replay
-- and this migration give one model one id without asking the database.
--
-- Rewrites every judged reading (every day partition) once, when this migration runs: minutes
-- for hundreds of millions of readings.

-- The first 8 bytes of the SHA-256 of the model's fields, NUL-separated, as a signed big-endian
-- integer: the training time as microseconds since 1970, an absent field as nothing. The host's
-- `DetectorModel::id` is the same function (a test holds them equal).
CREATE FUNCTION iotstream_detector_model_id(detector TEXT, detector_version TEXT, model_generation INTEGER,
                                            model_trained_at TIMESTAMPTZ, model_training_rows INTEGER)
RETURNS BIGINT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ('x' || encode(substring(sha256(
        convert_to(detector, 'UTF8') || '\x00'::bytea
        || convert_to(detector_version, 'UTF8') || '\x00'::bytea
        || convert_to(COALESCE(model_generation::TEXT, ''), 'UTF8') || '\x00'::bytea
        || convert_to(COALESCE((extract(epoch FROM model_trained_at) * 1000000)::BIGINT::TEXT, ''), 'UTF8')
        || '\x00'::bytea
        || convert_to(COALESCE(model_training_rows::TEXT, ''), 'UTF8')) FROM 1 FOR 8), 'hex'))::BIT(64)::BIGINT
$$;

-- Each detector version, and each model it trained, that stored verdicts name. `last_day` is the
-- newest day (UTC, of event time: the day partition) of a reading it judged, so retention drops
-- a model with the last partition that names it. Names and versions are TEXT: stored as a plugin
-- gives them, never refused (the view casts them to the seed's widths, as 0013's did).
CREATE TABLE detector_models (
    id                  BIGINT PRIMARY KEY,
    detector            TEXT NOT NULL,
    detector_version    TEXT NOT NULL,
    model_generation    INTEGER,
    model_trained_at    TIMESTAMPTZ,
    model_training_rows INTEGER,
    last_day            DATE NOT NULL
);

CREATE INDEX detector_models_last_day ON detector_models (last_day);

DROP VIEW ml_anomaly_predictions;

-- The verdicts stored so far, as 0013 kept them: each model once, then each judged reading's
-- verdicts rewritten in their order (two passes over the table, nothing held beside it).
INSERT INTO detector_models (id, detector, detector_version, model_generation, model_trained_at, model_training_rows,
                             last_day)
SELECT iotstream_detector_model_id(v.d, COALESCE(v.ver, ''), v.g, v.t, v.n), v.d, COALESCE(v.ver, ''), v.g, v.t, v.n,
       max((r.timestamp AT TIME ZONE 'UTC')::DATE)
FROM sensor_readings r
CROSS JOIN LATERAL json_to_recordset(r.verdicts) AS v (d TEXT, ver TEXT, g INTEGER, t TIMESTAMPTZ, n INTEGER)
WHERE r.verdicts::TEXT <> '[]'
GROUP BY v.d, COALESCE(v.ver, ''), v.g, v.t, v.n
ON CONFLICT (id) DO UPDATE SET last_day = GREATEST(detector_models.last_day, EXCLUDED.last_day);

UPDATE sensor_readings r
SET verdicts = (
    SELECT json_agg(json_build_array(iotstream_detector_model_id(v.d, COALESCE(v.ver, ''), v.g, v.t, v.n),
                                     CASE v.v WHEN 'warming_up' THEN 0 WHEN 'normal' THEN 1 WHEN 'anomaly' THEN 2 END,
                                     v.s) ORDER BY v.o)
    FROM ROWS FROM (json_to_recordset(r.verdicts) AS (d TEXT, ver TEXT, v TEXT, s DOUBLE PRECISION, g INTEGER,
                                                      t TIMESTAMPTZ, n INTEGER))
         WITH ORDINALITY AS v (d, ver, v, s, g, t, n, o))
WHERE r.verdicts::TEXT <> '[]';

-- The seed's table, as a view: a row per verdict, with its model's fields.
CREATE VIEW ml_anomaly_predictions AS
SELECT r.id,
       m.detector::VARCHAR(100)   AS detector,
       r.sensor_id,
       r.sensor_type,
       r.value,
       r.timestamp,
       (CASE v.e ->> 1 WHEN '0' THEN 'warming_up' WHEN '1' THEN 'normal' WHEN '2' THEN 'anomaly' END)::VARCHAR(16)
                                   AS verdict,
       (v.e ->> 1) = '2'           AS is_anomaly,
       (v.e ->> 2)::DOUBLE PRECISION AS anomaly_score,
       r.anomaly                   AS rule_based_anomaly,
       m.detector_version::VARCHAR(50) AS detector_version,
       m.model_generation,
       m.model_trained_at,
       m.model_training_rows,
       r.kafka_partition,
       r.kafka_offset,
       r.source_id
FROM sensor_readings r
CROSS JOIN LATERAL json_array_elements(r.verdicts) AS v (e)
JOIN detector_models m ON m.id = (v.e ->> 0)::BIGINT;
