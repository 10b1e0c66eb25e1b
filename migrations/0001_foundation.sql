-- 0001 foundation: trigger functions and monthly partition management.
--
-- Functions are created before the tables they touch (PL/pgSQL binds names at
-- run time), so every later migration can attach triggers and the partition
-- helpers are in place before the first partitioned table exists.

-- updated_at maintenance -----------------------------------------------------
--
-- Default behaviour (ad-hoc SQL, admin tooling): every UPDATE stamps
-- updated_at with the wall clock. The persister writers rebuild the read model
-- from the journal and want journal time instead: they run
--     SET mx.journal_time = 'on'          (session)  or
--     SET LOCAL mx.journal_time = 'on'    (one transaction)
-- and then the trigger keeps whatever updated_at the writer supplied, so a
-- replay produces identical rows.
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('mx.journal_time', true) IS DISTINCT FROM 'on' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- Same as set_updated_at() and, for tables with an optimistic-locking
-- `version` column, bumps version by one unless the UPDATE set it itself.
CREATE OR REPLACE FUNCTION set_updated_at_and_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('mx.journal_time', true) IS DISTINCT FROM 'on' THEN
        NEW.updated_at := now();
    END IF;
    IF NEW.version IS NOT DISTINCT FROM OLD.version THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END
$$;

-- Monthly partitions ----------------------------------------------------------
--
-- orders, trades, notifications, audit_logs are partitioned by RANGE
-- (created_at) and klines by RANGE (open_time), one partition per calendar
-- month in UTC, named <table>_yYYYYmMM (e.g. orders_y2026m12) and covering
-- [YYYY-MM-01 00:00:00+00, first day of next month 00:00:00+00).
--
-- There is deliberately NO default partition: a row whose month has no
-- partition fails loudly instead of piling up in a catch-all that later blocks
-- CREATE of the proper partition (Postgres must scan/validate the default
-- partition when a new one is created, and refuses if it holds rows of that
-- range). Partitions are created ahead of time: the migration creates the
-- current month through +3, and the persister calls
-- create_monthly_partitions(from, to) at startup and before writing a batch
-- whose journal timestamps reach a month not yet covered.
--
-- Creating a partition takes a strong lock on the parent: call these
-- functions in their own short transaction, never inside a writer's batch.

-- Creates (if missing) the partition of `table_name` for the month containing
-- `partition_date`; returns the partition's name. Idempotent and safe to call
-- concurrently (creators of one partition are serialised by an advisory lock).
CREATE OR REPLACE FUNCTION create_monthly_partition(table_name TEXT, partition_date DATE)
RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    parent      TEXT := create_monthly_partition.table_name;
    y           INT;
    m           INT;
    month_start DATE;
    month_end   DATE;
    part_name   TEXT;
BEGIN
    IF parent IS NULL OR parent NOT IN ('orders', 'trades', 'klines', 'notifications', 'audit_logs') THEN
        RAISE EXCEPTION 'create_monthly_partition: "%" is not a monthly-partitioned table '
                        '(orders, trades, klines, notifications, audit_logs)', parent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF partition_date IS NULL THEN
        RAISE EXCEPTION 'create_monthly_partition: partition_date must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- Pure date arithmetic: nothing here depends on the session's TimeZone.
    y := extract(year FROM partition_date)::int;
    m := extract(month FROM partition_date)::int;
    month_start := make_date(y, m, 1);
    month_end   := (month_start + INTERVAL '1 month')::date;
    part_name   := format('%s_y%sm%s', parent, lpad(y::text, 4, '0'), lpad(m::text, 2, '0'));

    PERFORM pg_advisory_xact_lock(hashtext('mx.create_monthly_partition'), hashtext(part_name));
    IF to_regclass(quote_ident(part_name)) IS NOT NULL THEN
        RETURN part_name;
    END IF;

    -- Bounds carry an explicit +00 offset so they mean UTC month boundaries
    -- whatever the session TimeZone is.
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   part_name, parent,
                   to_char(month_start, 'YYYY-MM-DD') || ' 00:00:00+00',
                   to_char(month_end, 'YYYY-MM-DD') || ' 00:00:00+00');
    RETURN part_name;
END
$$;

-- Ensures partitions of all five partitioned tables for every month from the
-- month of from_date through the month of to_date (both inclusive). Returns
-- how many partitions were newly created.
CREATE OR REPLACE FUNCTION create_monthly_partitions(from_date DATE, to_date DATE)
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    tables  TEXT[] := ARRAY['orders', 'trades', 'klines', 'notifications', 'audit_logs'];
    t       TEXT;
    month      DATE;
    last_month DATE;
    created    INTEGER := 0;
    part       TEXT;
BEGIN
    IF from_date IS NULL OR to_date IS NULL OR from_date > to_date THEN
        RAISE EXCEPTION 'create_monthly_partitions: need from_date <= to_date, got % and %', from_date, to_date
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    month := make_date(extract(year FROM from_date)::int, extract(month FROM from_date)::int, 1);
    last_month := make_date(extract(year FROM to_date)::int, extract(month FROM to_date)::int, 1);
    WHILE month <= last_month LOOP
        FOREACH t IN ARRAY tables LOOP
            part := format('%s_y%sm%s', t, to_char(month, 'YYYY'), to_char(month, 'MM'));
            IF to_regclass(quote_ident(part)) IS NULL THEN
                PERFORM create_monthly_partition(t, month);
                created := created + 1;
            END IF;
        END LOOP;
        month := (month + INTERVAL '1 month')::date;
    END LOOP;
    RETURN created;
END
$$;

-- The current UTC month through +3 months, for all five tables.
CREATE OR REPLACE FUNCTION create_monthly_partitions()
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    today DATE := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    RETURN create_monthly_partitions(today, (today + INTERVAL '3 months')::date);
END
$$;
