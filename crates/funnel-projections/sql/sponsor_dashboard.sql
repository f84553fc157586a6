-- Read model `sponsor_dashboard`: study setup plus one fact row per journey (and per journey ×
-- site), from which the sponsor dashboard's reports aggregate. Runs in a generation's own
-- schema; names are unqualified. No personal data: ids, codes, timestamps and counts only.
-- Timestamps are the events' own `at` (business time), truncated to microseconds.

CREATE TABLE studies (
    study_id          uuid        PRIMARY KEY,
    sponsor_id        uuid        NOT NULL,
    title             text        NOT NULL,
    protocol_code     text        NOT NULL,
    target_randomized bigint      NOT NULL,
    countries         text[]      NOT NULL,
    created_at        timestamptz NOT NULL
);

CREATE INDEX studies_sponsor ON studies (sponsor_id, created_at);

CREATE TABLE sites (
    study_id                  uuid             NOT NULL,
    site_id                   uuid             NOT NULL,
    name                      text             NOT NULL,
    country                   text             NOT NULL,
    monthly_target_randomized double precision NOT NULL,
    status                    text             NOT NULL,
    added_at                  timestamptz      NOT NULL,
    -- When the site closed; NULL while it is open (active or paused).
    closed_at                 timestamptz,
    PRIMARY KEY (study_id, site_id)
);

CREATE TABLE campaigns (
    study_id      uuid        NOT NULL,
    campaign_id   uuid        NOT NULL,
    name          text        NOT NULL,
    channel       text        NOT NULL,
    registered_at timestamptz NOT NULL,
    PRIMARY KEY (study_id, campaign_id)
);

-- One row per spend event (keyed by the event id, so a replayed event cannot count twice).
CREATE TABLE campaign_spend (
    event_id     uuid        PRIMARY KEY,
    study_id     uuid        NOT NULL,
    campaign_id  uuid        NOT NULL,
    amount_minor bigint      NOT NULL,
    currency     text        NOT NULL,
    period_start date        NOT NULL,
    period_end   date        NOT NULL,
    recorded_at  timestamptz NOT NULL
);

CREATE INDEX campaign_spend_study ON campaign_spend (study_id, campaign_id);

-- One row per journey: where it came from, where it is, and when it first reached each
-- milestone. `counted` is false once the journey is linked as a duplicate.
CREATE TABLE journeys (
    journey_id               uuid        PRIMARY KEY,
    study_id                 uuid        NOT NULL,
    campaign_id              uuid        NOT NULL,
    source                   text        NOT NULL,
    country                  text        NOT NULL,
    language                 text        NOT NULL,
    -- The site handling the candidate now; NULL before any site.
    site_id                  uuid,
    stage                    text        NOT NULL,
    stage_entered_at         timestamptz NOT NULL,
    counted                  boolean     NOT NULL,
    -- The furthest funnel step reached (0 referred .. 9 randomized), see docs/metrics.md.
    funnel_step              smallint    NOT NULL,
    referred_at              timestamptz NOT NULL,
    prescreened_at           timestamptz,
    prescreen_passed         boolean,
    first_contact_attempt_at timestamptz,
    contact_attempts         integer     NOT NULL,
    contacted_at             timestamptz,
    referred_to_site_at      timestamptz,
    reallocations            integer     NOT NULL,
    site_contacted_at        timestamptz,
    scheduled_at             timestamptz,
    first_appointment_at     timestamptz,
    attended_at              timestamptz,
    no_shows                 integer     NOT NULL,
    first_no_show_at         timestamptz,
    consented_at             timestamptz,
    screening_started_at     timestamptz,
    screen_failed_at         timestamptz,
    randomized_at            timestamptz,
    closed_at                timestamptz
);

CREATE INDEX journeys_study_referred ON journeys (study_id, referred_at);
CREATE INDEX journeys_study_site ON journeys (study_id, site_id);
CREATE INDEX journeys_study_randomized ON journeys (study_id, randomized_at)
    WHERE randomized_at IS NOT NULL;

-- One row per journey and site it was referred to: the milestones reached while that site
-- handled the candidate, so a reallocation leaves the first site's record in place.
CREATE TABLE journey_sites (
    journey_id           uuid        NOT NULL,
    site_id              uuid        NOT NULL,
    study_id             uuid        NOT NULL,
    referred_at          timestamptz NOT NULL,
    -- When the candidate was moved away from this site; NULL while the site handles them.
    left_at              timestamptz,
    site_contacted_at    timestamptz,
    scheduled_at         timestamptz,
    attended_at          timestamptz,
    no_shows             integer     NOT NULL,
    consented_at         timestamptz,
    screening_started_at timestamptz,
    screen_failed_at     timestamptz,
    randomized_at        timestamptz,
    PRIMARY KEY (journey_id, site_id)
);

CREATE INDEX journey_sites_study_site ON journey_sites (study_id, site_id);
