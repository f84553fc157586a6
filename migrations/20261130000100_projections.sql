-- Projector checkpoints: one row per projection name and logic version. The position is the
-- stream sequence of the last event applied; it is written in the same transaction as the
-- read-model changes, so every event takes effect exactly once.
CREATE TABLE projection_checkpoints (
    name            text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    position        bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- 'running' while it applies events; 'failed' when it met an event it cannot apply (it
    -- stops before that event and does not skip it).
    status          text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'failed')),
    last_error      text,
    -- The CloudEvents time of the last event applied, for lag in seconds.
    last_event_time timestamptz,
    PRIMARY KEY (name, version)
);

-- Read model `study_funnel`, version 1. Tables carry the projection version in their name so
-- that a rebuild can fill version 2 beside the live version 1.

-- Per journey: where it is now. Only for the projection's own bookkeeping.
CREATE TABLE rm_study_funnel_v1_journeys (
    journey_id uuid        PRIMARY KEY,
    study_id   uuid        NOT NULL,
    -- The site currently handling the candidate; NULL before any site.
    site_id    uuid,
    stage      text        NOT NULL,
    source     text        NOT NULL,
    -- False once linked as a duplicate: it then leaves every count.
    counted    boolean     NOT NULL
);

-- Journeys currently in each stage, per study and site. `site_id` is the nil UUID
-- (00000000-0000-0000-0000-000000000000) for journeys not at a site yet.
CREATE TABLE rm_study_funnel_v1_stage_counts (
    study_id uuid   NOT NULL,
    site_id  uuid   NOT NULL,
    stage    text   NOT NULL,
    journeys bigint NOT NULL CHECK (journeys >= 0),
    PRIMARY KEY (study_id, site_id, stage)
);

-- Referrals per study and source channel (duplicates excluded).
CREATE TABLE rm_study_funnel_v1_referrals (
    study_id  uuid   NOT NULL,
    source    text   NOT NULL,
    referrals bigint NOT NULL CHECK (referrals >= 0),
    PRIMARY KEY (study_id, source)
);
