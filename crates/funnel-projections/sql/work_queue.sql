-- Read model `work_queue`: the Enrollment Support Team's open work items, derived from the
-- journey and study streams (rules: docs/work-queues.md). Runs in a generation's own schema;
-- names are unqualified. No personal data: ids, codes, time zones, timestamps and counts.
-- Timestamps are the events' own `at` (business time), truncated to microseconds.

-- Each study's service levels (`StudyCreated.sla`; no later event changes them).
CREATE TABLE queue_studies (
    study_id              uuid    PRIMARY KEY,
    first_contact_hours   integer NOT NULL,
    contact_attempts      integer NOT NULL,
    attempt_spacing_hours integer NOT NULL,
    site_escalation_days  integer NOT NULL
);

-- One row per journey: what the derivation needs (`JourneyQueueState`). Each `*_seq` /
-- `*_at` pair is the stream sequence and time of an event, both NULL or both set.
CREATE TABLE queue_journeys (
    journey_id            uuid        PRIMARY KEY,
    study_id              uuid        NOT NULL,
    country               text        NOT NULL,
    language              text        NOT NULL,
    time_zone             text,
    consent_to_contact    boolean     NOT NULL,
    erased                boolean     NOT NULL,
    stage                 text        NOT NULL,
    site_id               uuid,
    prescreen_passed      boolean,
    referral_seq          bigint      NOT NULL,
    referred_at           timestamptz NOT NULL,
    -- Every contact attempt ever made.
    attempts              integer     NOT NULL,
    reached               boolean     NOT NULL,
    -- Unanswered attempts in the current cadence, its first one, its latest one.
    unanswered            integer     NOT NULL,
    cadence_started_at    timestamptz,
    last_attempt_seq      bigint,
    last_attempt_at       timestamptz,
    -- The pending call-back: the request, and the time asked for.
    callback_seq          bigint,
    callback_requested_at timestamptz,
    callback_at           timestamptz,
    -- A no-show nobody has called about yet.
    no_show_seq           bigint,
    no_show_at            timestamptz,
    -- The referral or reallocation to the current site.
    at_site_seq           bigint,
    at_site_at            timestamptz,
    -- Since when the journey waits for an appointment to be booked.
    schedule_seq          bigint,
    schedule_at           timestamptz
);

-- A study's creation re-derives the journeys referred before it.
CREATE INDEX queue_journeys_study ON queue_journeys (study_id);

-- The open work items. The columns up to `time_zone` are a contract with the API (claims,
-- leases); `overdue_at` and `ready_at` are added.
CREATE TABLE work_items (
    item_id      uuid        PRIMARY KEY, -- UUIDv5 over (journey_id, kind, opened_seq)
    journey_id   uuid        NOT NULL,
    study_id     uuid        NOT NULL,
    kind         text        NOT NULL,    -- first_contact | next_attempt | callback | schedule | re_engage | site_escalation
    country      text        NOT NULL,    -- the candidate's country
    language     text        NOT NULL,    -- the candidate's language
    site_id      uuid,                    -- the site concerned (schedule, site_escalation)
    due_at       timestamptz NOT NULL,
    opened_at    timestamptz NOT NULL,
    opened_seq   bigint      NOT NULL,
    attempt      integer     NOT NULL,    -- contact items: which attempt (1-based); else 0
    max_attempts integer     NOT NULL,    -- the study's cadence length
    time_zone    text,                    -- the candidate's IANA time zone, when known
    -- When the item breaches its service level; NULL for schedule and re_engage.
    overdue_at   timestamptz,
    -- From when an agent may take it: a first contact at once, every other kind at due_at.
    ready_at     timestamptz NOT NULL,
    UNIQUE (journey_id, kind),
    CHECK (kind IN ('first_contact', 'next_attempt', 'callback', 'schedule', 're_engage',
                    'site_escalation'))
);

-- The claim: WHERE study_id = ANY($1) AND <primary language subtag> = ANY($2)
-- AND ready_at <= now ORDER BY due_at LIMIT 1 (agents are routed by primary language
-- subtag: `pt` takes `pt-BR`). Scanning in due_at order stops at the first ready, unleased
-- item.
CREATE INDEX work_items_claim_primary_language
    ON work_items (study_id, (lower(split_part(language, '-', 1))), due_at);
-- Depth per study, kind, language and country.
CREATE INDEX work_items_depth ON work_items (study_id, kind, language, country, due_at);
