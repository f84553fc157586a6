-- Read models move into a schema per generation, so that a rebuild fills a new generation
-- beside the live one and readers switch over in one transaction. Read models are derived from
-- the stream: the version-1 tables are dropped here and rebuilt from position 1.
DROP TABLE rm_study_funnel_v1_journeys, rm_study_funnel_v1_stage_counts, rm_study_funnel_v1_referrals;
DROP TABLE projection_checkpoints;

-- One row per generation of a read model: its schema, its logic version, its checkpoint.
CREATE TABLE projection_generations (
    name            text        NOT NULL,
    -- 1, 2, 3, ... per name; a rebuild takes the next.
    generation      integer     NOT NULL CHECK (generation > 0),
    -- The projection's logic version that builds it.
    version         integer     NOT NULL CHECK (version > 0),
    -- Where its tables live: rm_<name>_g<generation>.
    schema_name     text        NOT NULL UNIQUE,
    -- 'building' while it catches up beside the live one, 'live' while readers use it,
    -- 'retired' once replaced (its schema is then dropped).
    state           text        NOT NULL CHECK (state IN ('building', 'live', 'retired')),
    -- The stream sequence of the last event applied, written in the same transaction as the
    -- read-model changes, so that every event takes effect exactly once.
    position        bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    -- 'failed' when it met an event it cannot apply: it stops before that event, never skips.
    status          text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'failed')),
    last_error      text,
    -- The CloudEvents time of the last event applied, for lag in seconds.
    last_event_time timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    live_since      timestamptz,
    retired_at      timestamptz,
    -- Set once the retired generation's schema is gone.
    dropped_at      timestamptz,
    PRIMARY KEY (name, generation)
);

-- At most one live and one building generation per read model.
CREATE UNIQUE INDEX projection_generations_one_live ON projection_generations (name)
    WHERE state = 'live';
CREATE UNIQUE INDEX projection_generations_one_building ON projection_generations (name)
    WHERE state = 'building';
