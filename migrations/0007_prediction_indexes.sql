-- Cheaper indexes on ml_anomaly_predictions (docs/performance.md). Every reading adds one verdict
-- row per detector, and the two text-keyed indexes below made PostgreSQL compare collated strings
-- for every one of them: storing 600,000 verdicts took 8.6 s with them and 4.5 s with neither
-- (5.8 s with the integer index that replaces the second).
--
-- (detector, timestamp): no query reads by it (the API's newest verdicts of a detector walk the
-- primary key; time ranges use the timestamp index).
DROP INDEX IF EXISTS ml_anomaly_predictions_detector_timestamp;
-- (sensor_id, timestamp) paired the verdicts of one reading (detector agreement). The message's
-- partition and offset pair them as well, and integers compare without a collation.
DROP INDEX IF EXISTS ml_anomaly_predictions_reading;
CREATE INDEX ml_anomaly_predictions_message_offset ON ml_anomaly_predictions (kafka_offset, kafka_partition);
