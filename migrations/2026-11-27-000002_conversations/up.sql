-- One row per pair of members; user_a < user_b makes the pair unique whoever
-- wrote first.
CREATE TABLE conversations (
    id              BIGSERIAL PRIMARY KEY,
    user_a          BIGINT NOT NULL REFERENCES profiles (id),
    user_b          BIGINT NOT NULL REFERENCES profiles (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_message_at TIMESTAMPTZ,
    last_message_id BIGINT,
    CHECK (user_a < user_b),
    UNIQUE (user_a, user_b)
);
-- The unique index above serves user_a's foreign key; this one user_b's.
CREATE INDEX conversations_user_b_idx ON conversations (user_b);

CREATE TABLE messages (
    id              BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    sender_id       BIGINT NOT NULL REFERENCES profiles (id),
    body            TEXT NOT NULL CHECK (char_length(body) BETWEEN 1 AND 4000),
    client_id       TEXT CHECK (char_length(client_id) BETWEEN 1 AND 64),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- History pages and `since` replay walk a conversation by id.
CREATE INDEX messages_conversation_id_idx ON messages (conversation_id, id);
-- Idempotent retries; also serves the sender_id foreign key.
CREATE UNIQUE INDEX messages_sender_client_id_key ON messages (sender_id, client_id);

-- How far each member has read each conversation.
CREATE TABLE conversation_reads (
    conversation_id      BIGINT NOT NULL REFERENCES conversations (id),
    user_id              BIGINT NOT NULL REFERENCES profiles (id),
    last_read_message_id BIGINT NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX conversation_reads_user_id_idx ON conversation_reads (user_id);
