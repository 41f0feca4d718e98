-- sensor_readings without its unique message index (docs/performance.md, docs/guarantees.md).
-- Storing a reading is most of what a reading costs the machine, and the index on
-- (source_id, kafka_partition, kafka_offset, timestamp) was about a third of a reading's COPY
-- (200,000 readings with three verdicts each, one COPY, every other index of the table: 1.24-1.38 s
-- with it, 0.88-0.96 s without). Its one use was the replay's duplicate guard, which the
-- partitions' stored positions already give: `kafka_offsets` moves, in the transaction that stores
-- a partition's messages, past the last of them, and never back, so a message below it was stored
-- (or refused and dead-lettered). The host reads those positions in each batch's transaction,
-- stores only the messages past them, and locks them before it moves them, rolling back if another
-- transaction moved one past a message it stored meanwhile (docs/guarantees.md).
--
-- Nothing else read the index: a reading's message is still in its row (source_id,
-- kafka_partition, kafka_offset), for joins and for operators' queries, which now scan by time.
-- Moving a position in kafka_offsets back by hand now stores the messages after it again.

DROP INDEX sensor_readings_message;
