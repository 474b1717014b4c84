-- Enrollment and what agents report. These rows are written by agent traffic, outside the
-- versioned desired-state commits, so a busy fleet never makes an apply retry.

-- One-time (or few-time) join tokens; only the SHA-256 of the secret is kept.
CREATE TABLE join_tokens (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    site       TEXT NOT NULL,
    uses_left  INTEGER NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Enrolled hosts, each a member of one site.
CREATE TABLE hosts (
    id          TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    hostname    TEXT NOT NULL,
    inventory   TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_expiry TEXT NOT NULL,
    enrolled_at TEXT NOT NULL,
    last_seen   TEXT
);
CREATE INDEX hosts_site ON hosts (site);

-- The newest status each host reported, and the highest report sequence stored for it.
CREATE TABLE host_status (
    host       TEXT PRIMARY KEY,
    site       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    status     TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Events reported by agents; (host, seq, idx) makes a resent batch a no-op.
CREATE TABLE events (
    host    TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    site    TEXT NOT NULL,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (host, seq, idx)
);
CREATE INDEX events_site ON events (site, at);
