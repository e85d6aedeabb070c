-- Member History's durable state (PostgreSQL). Blobs are sealed (compressed, AES-256-GCM).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE launches (
    id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    data BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    last_used BIGINT NOT NULL
);
CREATE INDEX launches_last_used ON launches (last_used);

CREATE TABLE histories (
    launch_id TEXT NOT NULL REFERENCES launches (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    data BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (launch_id, id)
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dedupe_key TEXT UNIQUE,
    launch_id TEXT REFERENCES launches (id) ON DELETE CASCADE,
    payload BYTEA NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    run_after BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    result BYTEA,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (kind, state, run_after);

CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at_ms);
