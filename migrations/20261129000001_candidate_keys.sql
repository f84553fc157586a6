-- One data key per candidate. Contact data on the stream is sealed with it; deleting the key
-- (crypto-shredding) makes every copy of that data unreadable while the events stay.
CREATE TABLE candidate_keys (
    candidate_id uuid PRIMARY KEY,
    -- NULL once erased: the row stays as the record that erasure happened.
    data_key     bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    erased_at    timestamptz,
    CONSTRAINT erased_has_no_key CHECK ((data_key IS NULL) = (erased_at IS NOT NULL))
);
