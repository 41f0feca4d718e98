-- Hosts sharing a topic (docs/scaling.md) each make the day partitions ahead and for their
-- batches' days: two making the same day at once raced between the function's check and its
-- CREATE TABLE ("relation already exists"). The function now takes a transaction-scoped advisory
-- lock on the partition's name first, so the second waits for the first and finds it made.

CREATE OR REPLACE FUNCTION iotstream_ensure_day_partition(parent TEXT, day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    partition TEXT := parent || '_' || to_char(day, 'YYYYMMDD');
    fallback  TEXT := parent || '_default';
    low       TIMESTAMPTZ := day::timestamp AT TIME ZONE 'UTC';
    high      TIMESTAMPTZ := (day + 1)::timestamp AT TIME ZONE 'UTC';
    key       TEXT;
    stranded  BOOLEAN;
BEGIN
    -- One maker of a day's partition at a time: the others wait, then find it made.
    PERFORM pg_advisory_xact_lock(hashtext('iotstream_day_partition'), hashtext(partition));
    IF to_regclass(partition) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname INTO key FROM pg_partitioned_table p
        JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
        WHERE p.partrelid = parent::regclass;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= %L AND %I < %L)', fallback, key, low, key, high)
        INTO stranded;
    IF stranded THEN
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', partition, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       fallback, key, low, key, high, partition);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, partition, low, high);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', partition, parent, low, high);
    END IF;
    RETURN true;
END
$$;
