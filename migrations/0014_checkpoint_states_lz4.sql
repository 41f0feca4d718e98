-- Checkpoint states compressed with lz4 instead of pglz (docs/performance.md). A checkpoint holds
-- every stage's state, the Isolation Forest's about a megabyte a lane, in the transaction of the
-- batch it follows: compressing four lanes' states with pglz took about 100 ms more than with lz4
-- (measured here: 150 ms against 55 ms to store 4 MB of forest states; 590 KB against 640 KB a
-- lane stored), and that batch, and the ones queued behind it, waited for it.
--
-- A server built without lz4 (PostgreSQL before 14, or built without it; the official images and
-- Debian's packages have it) keeps pglz.
DO $$
BEGIN
    ALTER TABLE stage_checkpoint_states ALTER COLUMN state SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: checkpoint states stay compressed with pglz';
END
$$;
