-- Presence: which hosts each control-plane replica is in touch with. One row per replica and
-- host, written only by that replica, about once a second in one transaction with its
-- heartbeat. Times are milliseconds since the Unix epoch on the store's clock; `change` is the
-- presence-change number of the row's last write (every write takes the next one), which
-- readers follow.
CREATE TABLE presence (
    replica TEXT NOT NULL,
    host    TEXT NOT NULL,
    site    TEXT NOT NULL,
    polls   INTEGER NOT NULL,
    seen_at INTEGER NOT NULL,
    change  INTEGER NOT NULL,
    PRIMARY KEY (replica, host)
);
CREATE INDEX presence_by_change ON presence (change);
-- Each replica's last presence write: its open polls count only while it is recent.
CREATE TABLE presence_replicas (
    replica TEXT PRIMARY KEY,
    beat_at INTEGER NOT NULL
);
