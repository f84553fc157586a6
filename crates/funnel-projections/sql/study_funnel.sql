-- Read model `study_funnel`: journeys per study × site × stage now, referrals per source.
-- Runs in a generation's own schema; names are unqualified.

-- Per journey: where it is now. Only for the projection's own bookkeeping.
CREATE TABLE journeys (
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
CREATE TABLE stage_counts (
    study_id uuid   NOT NULL,
    site_id  uuid   NOT NULL,
    stage    text   NOT NULL,
    journeys bigint NOT NULL CHECK (journeys >= 0),
    PRIMARY KEY (study_id, site_id, stage)
);

-- Referrals per study and source channel (duplicates excluded).
CREATE TABLE referrals (
    study_id  uuid   NOT NULL,
    source    text   NOT NULL,
    referrals bigint NOT NULL CHECK (referrals >= 0),
    PRIMARY KEY (study_id, source)
);
