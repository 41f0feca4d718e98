-- Windows across partitions and hosts (docs/guarantees.md, "Windows"). Hosts share a topic through
-- Kafka's consumer group and run their stages once per partition they own (a lane), so each
-- lane's aggregator sees only its partition's readings: what it emits for a (location, sensor
-- type, window start) is a partial of the window, and several partitions, on one host or on
-- several, emit partials of the same window.
--
-- Each row of sensor_aggregates is now one partition's partial (kafka_partition; -1 for the rows
-- written before, when one aggregator saw every partition). The unique revision index holds the
-- partition, so partials of different partitions never replace each other, while a partial
-- emitted again (a replay: same partition, same revision) replaces its earlier emission.
ALTER TABLE sensor_aggregates ADD COLUMN kafka_partition INTEGER NOT NULL DEFAULT -1;
DROP INDEX sensor_aggregates_revision;
CREATE UNIQUE INDEX sensor_aggregates_revision
    ON sensor_aggregates (source_id, stage, location, sensor_type, window_start, kafka_partition, revision)
    WHERE source_id > 0;
-- The newest emissions first (Store::recent_aggregates), without sorting the whole table.
CREATE INDEX sensor_aggregates_emission_order ON sensor_aggregates (emission);

-- Each window once: the exact merge of its partials, each partial at its newest emission (which,
-- as before, holds every reading its partition processed so far). Per window (stage, location,
-- sensor type, window start) of a source (a topic's epoch: another topic's windows are other
-- windows), over the partials i (one per partition):
--
--   count_readings, anomaly_count, late_count  the sums
--   avg_value       the mean weighted by count: sum(n_i * mean_i) / n
--   stddev_value    population stddev from the merged sum of squared deviations (Chan et al.):
--                   M2 = sum(M2_i + n_i * (mean_i - mean)^2), M2_i = stddev_i^2 * n_i,
--                   stddev = sqrt(M2 / n)
--   min_value, max_value  the least and the greatest
--   revision        the sum of the partials' revisions: it grows whenever any partial is revised
--                   (the window's revision count); a partial added grows count_readings instead
--   window_end, emitted_at, emission  the greatest (emitted_at and emission: the newest partial's)
--   id              the newest partial's row's
--   partials        how many partials were merged
--
-- A window of one partial (every window written before this migration, and a window only one
-- partition had readings of) is that partial's row unchanged, bit for bit. The merged M2 keeps
-- the partials' deviations apart from the spread of their means, so nothing is subtracted from a
-- large sum of squares: exact up to rounding, as the single pass the plugin makes. The sums are
-- clamped to INTEGER, the columns' type.
DROP VIEW sensor_aggregates_latest;
CREATE VIEW sensor_aggregates_latest AS
SELECT
    (array_agg(id ORDER BY emission DESC))[1] AS id,
    stage,
    window_start,
    max(window_end) AS window_end,
    location,
    sensor_type,
    CASE WHEN count(*) = 1 THEN min(avg_value)
         ELSE COALESCE(min(mean), (array_agg(avg_value ORDER BY emission DESC))[1]) END AS avg_value,
    min(min_value) AS min_value,
    max(max_value) AS max_value,
    CASE WHEN count(*) = 1 THEN min(stddev_value)
         ELSE COALESCE(sqrt(GREATEST(sum(stddev_value * stddev_value * count_readings
                                         + count_readings * (avg_value - mean) * (avg_value - mean)), 0)
                            / NULLIF(min(readings), 0)),
                       (array_agg(stddev_value ORDER BY emission DESC))[1]) END AS stddev_value,
    LEAST(sum(count_readings), 2147483647)::INTEGER AS count_readings,
    LEAST(sum(anomaly_count), 2147483647)::INTEGER AS anomaly_count,
    LEAST(sum(revision), 2147483647)::INTEGER AS revision,
    LEAST(sum(late_count), 2147483647)::INTEGER AS late_count,
    max(emitted_at) AS emitted_at,
    source_id,
    max(emission) AS emission,
    count(*)::INTEGER AS partials
FROM (
    SELECT newest.*,
           sum(count_readings) OVER merged AS readings,
           sum(avg_value * count_readings) OVER merged / NULLIF(sum(count_readings) OVER merged, 0) AS mean
    FROM (
        SELECT DISTINCT ON (stage, location, sensor_type, window_start, source_id, kafka_partition) *
        FROM sensor_aggregates
        ORDER BY stage, location, sensor_type, window_start, source_id, kafka_partition, emission DESC
    ) newest
    WINDOW merged AS (PARTITION BY stage, location, sensor_type, window_start, source_id)
) partial
GROUP BY stage, location, sensor_type, window_start, source_id;
