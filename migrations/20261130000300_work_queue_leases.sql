-- Leases and completions of Enrollment Support Team work items.
--
-- The open items themselves are a read model (`work_items` in the live `work_queue`
-- generation's schema), rebuilt from the stream at will. What agents do with them is
-- operational state that the stream does not hold, so it lives here in `public`: a rebuild
-- swaps the item tables underneath but keeps every lease. Item ids are deterministic, so a
-- lease taken on the old generation's item names the same item in the new one.

-- Who is working which item right now. One row per item that is leased, or was completed a
-- moment ago and is still shown by the read model (see `completed_seq`).
--
-- This is the hot table: every claim inserts or updates a row, every extension updates one,
-- every release and prune deletes one, so a busy team churns through far more row versions
-- than the table ever holds live rows (a few per agent).
-- * fillfactor 70 leaves room on each page so that an extension (which changes only the
--   unindexed `expires_at`) is a HOT update: no index entry per extension, and page pruning
--   reclaims the old version without waiting for vacuum.
-- * The default autovacuum trigger (20% of the table changed) scales with table size; a table
--   this small and this busy needs a fixed trigger instead, so dead versions are vacuumed after
--   a few hundred changes and the claim query's anti-join stays on a few pages. Vacuuming it
--   costs next to nothing, so it runs unthrottled.
CREATE TABLE work_leases (
    item_id       uuid        PRIMARY KEY,
    journey_id    uuid        NOT NULL,
    agent_id      uuid        NOT NULL,
    claimed_at    timestamptz NOT NULL,
    -- The lease holds while the service clock is before this; then the item is back in the queue.
    -- Deliberately unindexed (see fillfactor).
    expires_at    timestamptz NOT NULL,
    -- Set when the holder completed the item: the stream sequence of the journey's last event
    -- appended by the completion. Until the read model has applied that event it still shows the
    -- item as open, and this row keeps it from being claimed a second time; afterwards the row is
    -- pruned (the item is gone, or is legitimately open again).
    completed_seq bigint,
    CONSTRAINT lease_ends_after_claim CHECK (expires_at >= claimed_at)
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 200,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 200,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 200,
    autovacuum_vacuum_cost_delay = 0
);

-- "What am I holding" for an agent, and pruning leases of a journey that moved on.
CREATE INDEX work_leases_agent ON work_leases (agent_id);
CREATE INDEX work_leases_journey ON work_leases (journey_id);

-- One row per completed item: who did what, when, and which events it appended. It is the
-- source of the team-lead reports (completions per agent and outcome), not of any funnel fact:
-- the events on the stream are the record. No personal data: ids, codes and times only.
--
-- Years of history: the table is RANGE-partitioned by month of `completed_at`. The service
-- creates each month's partition a few months ahead (`work_completions_yYYYYmMM`); a row that
-- finds no partition (a clock far ahead, a service down for months) lands in the default
-- partition, and is moved into its month when that month's partition is created.
--
-- Retention: reports read at most a few months back; partitions that ended more than the
-- configured retention ago (24 months by default, `QueueSettings::completion_retention_months`)
-- are detached and dropped by the service, which costs no vacuum and no bloat, unlike a
-- DELETE. An operator who must keep them longer archives a partition before that (detach it,
-- dump it) or raises the retention.
CREATE TABLE work_completions (
    item_id       uuid        NOT NULL,
    journey_id    uuid        NOT NULL,
    study_id      uuid        NOT NULL,
    kind          text        NOT NULL,
    country       text        NOT NULL,
    language      text        NOT NULL,
    agent_id      uuid        NOT NULL,
    -- no_answer, reached, callback, not_interested, opted_out, wrong_number, unreachable, ...
    outcome       text        NOT NULL,
    due_at        timestamptz NOT NULL,
    claimed_at    timestamptz NOT NULL,
    completed_at  timestamptz NOT NULL,
    -- The event types appended, in order (e.g. {contact_attempted, referred_to_site,
    -- appointment_scheduled}), and the journey's version (stream sequence) after them.
    events        text[]      NOT NULL,
    journey_version bigint    NOT NULL,
    -- A partitioned table's unique keys must contain the partition key. An item is completed
    -- at most once: completing needs its lease, which the completion consumes in the same
    -- transaction.
    PRIMARY KEY (item_id, completed_at)
) PARTITION BY RANGE (completed_at);

CREATE TABLE work_completions_default PARTITION OF work_completions DEFAULT;

-- Per-agent reports over a time range; per-study reports.
CREATE INDEX work_completions_agent ON work_completions (agent_id, completed_at);
CREATE INDEX work_completions_study ON work_completions (study_id, completed_at);

-- Creates the partition of the month (UTC) that begins on `month_start` unless it exists, and
-- moves into it the rows the default partition caught for that month, in one transaction.
-- Returns whether it created the partition. Instances calling it at once queue on a lock.
CREATE FUNCTION work_completions_ensure_partition(month_start date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('work_completions_y%sm%s',
                        to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
    -- Bounds at UTC midnight, whatever the session's time zone.
    lower_bound timestamptz := month_start::timestamp AT TIME ZONE 'UTC';
    upper_bound timestamptz := (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF month_start <> date_trunc('month', month_start)::date THEN
        RAISE EXCEPTION 'not the first day of a month: %', month_start;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('funnel.work_completions.partitions', 0));
    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE public.%I (LIKE public.work_completions '
                   'INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('WITH moved AS (DELETE FROM public.work_completions_default '
                   'WHERE completed_at >= %L AND completed_at < %L RETURNING *) '
                   'INSERT INTO public.%I SELECT * FROM moved', lower_bound, upper_bound, part);
    -- Attaching creates the partition's share of the parent's indexes.
    EXECUTE format('ALTER TABLE public.work_completions ATTACH PARTITION public.%I '
                   'FOR VALUES FROM (%L) TO (%L)', part, lower_bound, upper_bound);
    RETURN true;
END
$$;

-- Detaches and drops the month partitions that ended on or before `cutoff` (the retention).
-- Returns their names. Plain DETACH (not CONCURRENTLY, which a table with a default partition
-- does not allow) locks the parent briefly; it runs once per month's worth of history.
CREATE FUNCTION work_completions_drop_partitions(cutoff date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('funnel.work_completions.partitions', 0));
    FOR part IN
        SELECT c.relname::text
        FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
        WHERE h.inhparent = 'public.work_completions'::regclass
          AND c.relname ~ '^work_completions_y[0-9]{4}m[0-9]{2}$'
          AND to_date(substr(c.relname, 19, 4) || substr(c.relname, 24, 2), 'YYYYMM')
              + interval '1 month' <= cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE public.work_completions DETACH PARTITION public.%I', part);
        EXECUTE format('DROP TABLE public.%I', part);
        RETURN NEXT part;
    END LOOP;
END
$$;
