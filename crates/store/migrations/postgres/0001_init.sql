-- The PostgreSQL store's schema: the same tables, columns and meanings as the SQLite one
-- (migrations/sqlite, 0001 to 0007, whose comments say what each table is for), in one step.
-- Text that is ordered or compared (names, sites, RFC 3339 times) is COLLATE "C": byte order,
-- as SQLite compares, whatever locale the database was made with. JSON is kept as TEXT: the
-- control plane owns its shape, the store only keeps it.

CREATE TABLE meta (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO meta (id, version) VALUES (1, 0);

CREATE TABLE resources (
    kind       TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    generation BIGINT NOT NULL,
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);

-- `seq` orders an application's versions by when they were applied (SQLite's rowid).
CREATE TABLE app_versions (
    name       TEXT COLLATE "C" NOT NULL,
    version    TEXT COLLATE "C" NOT NULL,
    spec       TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    seq        BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (name, version)
);
CREATE INDEX app_versions_seq ON app_versions (name, seq);

CREATE TABLE manifests (
    site       TEXT COLLATE "C" PRIMARY KEY,
    revision   BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE audit (
    seq    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);

CREATE TABLE join_tokens (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    site       TEXT COLLATE "C" NOT NULL,
    uses_left  BIGINT NOT NULL,
    expires_at TEXT COLLATE "C" NOT NULL,
    created_at TEXT NOT NULL
);

-- `changed` is the host-change number, taken from the sequence `host_change` (see
-- src/postgres.rs for why a reader never misses a change). CACHE 1 (the default): a session
-- caching numbers ahead would hand them out of order.
CREATE SEQUENCE host_change AS BIGINT CACHE 1;
CREATE TABLE hosts (
    id                TEXT COLLATE "C" PRIMARY KEY,
    site              TEXT COLLATE "C" NOT NULL,
    hostname          TEXT NOT NULL,
    inventory         TEXT NOT NULL,
    cert_serial       TEXT NOT NULL,
    cert_expiry       TEXT NOT NULL,
    enrolled_at       TEXT NOT NULL,
    last_seen         TEXT,
    recipient         TEXT,
    previous_serial   TEXT,
    previous_until    TEXT,
    pending_recipient TEXT,
    state             TEXT NOT NULL DEFAULT 'attached',
    detached_at       TEXT,
    changed           BIGINT NOT NULL,
    labels            TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX hosts_site ON hosts (site);
CREATE INDEX hosts_changed ON hosts (changed);

CREATE TABLE host_status (
    host       TEXT COLLATE "C" PRIMARY KEY,
    site       TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL,
    status     TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE events (
    host        TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    idx         BIGINT NOT NULL,
    site        TEXT COLLATE "C" NOT NULL,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    received_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (host, seq, idx)
);
CREATE INDEX events_site_received ON events (site, received_at, host, seq, idx);

CREATE TABLE event_counts (
    site   TEXT COLLATE "C" PRIMARY KEY,
    kept   BIGINT NOT NULL,
    pruned BIGINT NOT NULL
);

CREATE TABLE rollouts (
    deployment TEXT COLLATE "C" PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE rollout_history (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deployment TEXT COLLATE "C" NOT NULL,
    state      TEXT NOT NULL,
    ended_at   TEXT NOT NULL
);
CREATE INDEX rollout_history_deployment ON rollout_history (deployment, seq);

CREATE TABLE secrets (
    name        TEXT COLLATE "C" PRIMARY KEY,
    meta        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
