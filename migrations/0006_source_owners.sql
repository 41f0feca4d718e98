-- Which host owns a source (docs/guarantees.md, "One host per source"). A host that takes a
-- source's advisory lock counts its ownership up here, on the source's first row (its lineage),
-- and every batch transaction it runs checks the count is still its own: once another host took
-- the source over (the first host's lock session ended, say in a database outage, while it ran on),
-- the old owner's writes are refused instead of overwriting the new owner's batch log and
-- checkpoints. A database outage alone changes nothing here, so an owner resumes after one.
ALTER TABLE kafka_sources ADD COLUMN owner_generation BIGINT NOT NULL DEFAULT 0;
