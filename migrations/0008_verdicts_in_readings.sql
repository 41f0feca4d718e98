-- One row per reading: the detectors' verdicts move into the reading's own row.
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

ALTER TABLE sensor_readings ADD COLUMN verdicts JSONB NOT NULL DEFAULT '[]'::jsonb;

UPDATE sensor_readings r SET verdicts = p.verdicts
FROM (
    SELECT source_id, kafka_partition, kafka_offset, sensor_id, timestamp,
           jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
               'd', detector, 'ver', detector_version, 'v', verdict, 's', anomaly_score,
               'g', model_generation, 't', model_trained_at, 'n', model_training_rows)) ORDER BY detector) AS verdicts
    FROM ml_anomaly_predictions
    GROUP BY source_id, kafka_partition, kafka_offset, sensor_id, timestamp
) p
WHERE r.source_id = p.source_id AND r.kafka_partition = p.kafka_partition AND r.kafka_offset = p.kafka_offset
  AND r.sensor_id = p.sensor_id AND r.timestamp = p.timestamp;

DROP TABLE ml_anomaly_predictions;

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
