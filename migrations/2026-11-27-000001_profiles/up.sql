-- A member's profile. `id` is the member's user id (the JWT `sub`), so it is
-- assigned by the caller, not by a sequence.
CREATE TABLE profiles (
    id                  BIGINT PRIMARY KEY CHECK (id > 0),
    display_name        TEXT NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100),
    gender              TEXT NOT NULL CHECK (gender IN ('male', 'female')),
    date_of_birth       DATE NOT NULL,
    religion            TEXT NOT NULL CHECK (char_length(religion) BETWEEN 1 AND 50),
    city                TEXT NOT NULL CHECK (char_length(city) BETWEEN 1 AND 100),
    occupation          TEXT,
    bio                 TEXT NOT NULL DEFAULT '' CHECK (char_length(bio) <= 2000),
    verification_status TEXT NOT NULL DEFAULT 'pending'
                        CHECK (verification_status IN ('pending', 'approved', 'rejected')),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_active_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The newest-first scroll, one partial index per filter that leads the scan.
-- The predicate is a literal in the queries too, so even a prepared
-- statement's generic plan can prove it and use these indexes.
-- No gender filter: walk approved profiles in sort order.
CREATE INDEX profiles_scroll_idx ON profiles (created_at DESC, id DESC)
    INCLUDE (gender, date_of_birth)
    WHERE verification_status = 'approved';
-- Gender filter (the common case): equality first, then the sort key, then
-- the age range column so age filtering happens inside the index.
CREATE INDEX profiles_scroll_gender_idx ON profiles (gender, created_at DESC, id DESC, date_of_birth)
    WHERE verification_status = 'approved';
-- City filter: ~200 cities with a long tail, so walking the gender index and
-- filtering by a rare city would read thousands of rows per page.
CREATE INDEX profiles_scroll_city_idx ON profiles (city, created_at DESC, id DESC)
    INCLUDE (gender, date_of_birth)
    WHERE verification_status = 'approved';
