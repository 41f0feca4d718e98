-- The batch log (docs/guarantees.md): which messages each committed batch held, so that a restart
-- forms the batches after its checkpoint again exactly and the stages see the sequence an
-- uncrashed run saw. Rows older than every kept checkpoint are deleted with the checkpoints.
CREATE TABLE kafka_batches (
    source_id    SMALLINT    NOT NULL REFERENCES kafka_sources (id),
    -- Counts the source's batches; a batch formed again keeps its number.
    batch_seq    BIGINT      NOT NULL,
    -- Parallel arrays: for each partition the batch read, the offset after its last message there.
    partitions   INTEGER[]   NOT NULL,
    offsets      BIGINT[]    NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, batch_seq)
);

-- The batch a checkpoint follows (NULL for checkpoints written before the log existed).
ALTER TABLE stage_checkpoints ADD COLUMN after_batch BIGINT;
