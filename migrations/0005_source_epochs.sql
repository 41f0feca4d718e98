-- Epochs of a source (docs/guarantees.md, "A log that starts again"). A topic deleted and created
-- again, or a broker whose log was wiped, reuses offsets: its messages would collide with the rows
-- of the old log under (source, partition, offset) and be dropped as replays. When the operator
-- accepts such a new log (`--accept-new-log`), the host registers a new epoch, a new source id, so
-- the old rows keep their keys and the new messages get their own.
ALTER TABLE kafka_sources ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
-- Why the epoch began (NULL for a source's first): the positions the broker no longer had.
ALTER TABLE kafka_sources ADD COLUMN reason TEXT;
ALTER TABLE kafka_sources DROP CONSTRAINT kafka_sources_cluster_id_topic_key;
ALTER TABLE kafka_sources ADD CONSTRAINT kafka_sources_epoch UNIQUE (cluster_id, topic, epoch);
