-- Append-only, time-ordered logs: rows arrive in created_at order, so a BRIN
-- index answers time-range reads at a tiny fraction of a btree's size.
-- No foreign keys: a log outlives what it mentions.
CREATE TABLE audit_logs (
    id          BIGSERIAL PRIMARY KEY,
    actor_id    BIGINT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   BIGINT NOT NULL,
    details     JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_created_at_brin ON audit_logs USING brin (created_at);

CREATE TABLE sessions (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    node_id         TEXT NOT NULL,
    socket_id       TEXT NOT NULL,
    connected_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    disconnected_at TIMESTAMPTZ
);
CREATE INDEX sessions_connected_at_brin ON sessions USING brin (connected_at);
