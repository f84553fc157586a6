-- API tokens: only a hash of the secret is stored; the token is shown once when created.
CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    secret_hash bytea NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'campaign', 'agent', 'site', 'sponsor')),
    -- Scope, by role: a campaign posts for its campaign and studies; an agent works its studies
    -- and languages; site staff see their own site; a sponsor reads its own studies.
    sponsor_id  uuid,
    campaign_id uuid,
    agent_id    uuid,
    site_id     uuid,
    study_ids   uuid[] NOT NULL DEFAULT '{}',
    languages   text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT campaign_scope CHECK (role <> 'campaign' OR campaign_id IS NOT NULL),
    CONSTRAINT agent_scope CHECK (role <> 'agent' OR agent_id IS NOT NULL),
    CONSTRAINT site_scope CHECK (role <> 'site' OR site_id IS NOT NULL),
    CONSTRAINT sponsor_scope CHECK (role <> 'sponsor' OR sponsor_id IS NOT NULL)
);

-- Referral idempotency for good, not only within the stream's duplicate window: a campaign's
-- key (its external id or an Idempotency-Key) maps to the one journey it created.
CREATE TABLE referral_requests (
    campaign_id     uuid NOT NULL,
    idempotency_key text NOT NULL,
    -- Hash of the request body: the same key with a different referral is refused.
    request_hash    bytea NOT NULL,
    journey_id      uuid NOT NULL UNIQUE,
    candidate_id    uuid NOT NULL,
    study_id        uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, idempotency_key)
);

-- Keyed hashes (HMAC) of a candidate's normalised phone and e-mail per study, to link a second
-- referral of the same person as a duplicate without keeping contact data in plaintext.
-- Deleted on erasure.
CREATE TABLE contact_fingerprints (
    study_id     uuid NOT NULL,
    fingerprint  bytea NOT NULL,
    journey_id   uuid NOT NULL,
    candidate_id uuid NOT NULL,
    PRIMARY KEY (study_id, fingerprint)
);
CREATE INDEX contact_fingerprints_candidate ON contact_fingerprints (candidate_id);

-- Which journeys a candidate has, so erasure can reach all of them.
CREATE TABLE candidate_journeys (
    journey_id   uuid PRIMARY KEY,
    candidate_id uuid NOT NULL,
    study_id     uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX candidate_journeys_candidate ON candidate_journeys (candidate_id);

-- Service-wide secrets generated on first start when none is configured (e.g. the key of the
-- contact fingerprints). Never returned by any route.
CREATE TABLE service_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
