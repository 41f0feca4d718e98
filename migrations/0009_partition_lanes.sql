-- Hosts share a topic through Kafka's consumer group (docs/scaling.md): each owns some of its
-- partitions, and the pipeline keeps everything that carries state per partition (a lane): its
-- stages' checkpoints, its batch log, its owner. A host that is given a partition restores that
-- partition's checkpoint and forms that partition's logged batches again; one that loses it
-- commits them first.

-- Which host owns each partition of a source (keyed by the source's first id, its lineage, like the
-- single-owner fence this replaces). A host given a partition counts its generation up; every batch
-- transaction takes its partitions' rows shared and checks their generations are still its own, so
-- a host that lost a partition while it ran on (a pause past the group's session timeout) has its
-- writes refused instead of overwriting the new owner's batch log and checkpoints. The take-over's
-- update waits for the old owner's transaction in flight.
CREATE TABLE partition_owners (
    source_id       SMALLINT    NOT NULL REFERENCES kafka_sources (id),
    kafka_partition INTEGER     NOT NULL,
    -- The host as it names itself (--host-name: its hostname and process id by default).
    owner           TEXT        NOT NULL,
    -- Counts the partition's take-overs.
    generation      BIGINT      NOT NULL DEFAULT 1,
    since           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, kafka_partition)
);

-- A checkpoint is one partition's: the state of the stages that saw only its messages. Checkpoints
-- written before lanes held every partition's state in one and cannot be split: they stay (NULL
-- here) but no lane restores them; a lane without a checkpoint of its own rebuilds its state from
-- the start of its partition (the rows it replays are stored already and skipped).
ALTER TABLE stage_checkpoints ADD COLUMN kafka_partition INTEGER;
DROP INDEX stage_checkpoints_source;
CREATE INDEX stage_checkpoints_lane ON stage_checkpoints (source_id, kafka_partition, id);

-- The batch log per lane: each batch of a partition's stages and the offset after its last
-- message (it starts where the previous one ended). The old log's batches spanned partitions and
-- are only needed with the old checkpoints, which no lane restores.
DROP TABLE kafka_batches;
CREATE TABLE kafka_batches (
    source_id       SMALLINT    NOT NULL REFERENCES kafka_sources (id),
    kafka_partition INTEGER     NOT NULL,
    -- Counts the lane's batches; a batch formed again keeps its number.
    batch_seq       BIGINT      NOT NULL,
    next_offset     BIGINT      NOT NULL,
    committed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, kafka_partition, batch_seq)
);

-- The single owner's count this replaces.
ALTER TABLE kafka_sources DROP COLUMN owner_generation;
