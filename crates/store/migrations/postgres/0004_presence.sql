-- Presence: which hosts each control-plane replica is in touch with. One row per replica and
-- host, written only by that replica, about once a second in one transaction with its
-- heartbeat. Times are milliseconds since the Unix epoch on the store's clock; `change` is the
-- presence-change number of the row's last write (every write takes the next one), which
-- readers follow.
CREATE TABLE presence (
    replica TEXT COLLATE "C" NOT NULL,
    host    TEXT COLLATE "C" NOT NULL,
    site    TEXT COLLATE "C" NOT NULL,
    polls   BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    change  BIGINT NOT NULL,
    PRIMARY KEY (replica, host)
);
CREATE INDEX presence_by_change ON presence (change);
-- Each replica's last presence write: its open polls count only while it is recent.
CREATE TABLE presence_replicas (
    replica TEXT COLLATE "C" PRIMARY KEY,
    beat_at BIGINT NOT NULL
);
-- Presence-change numbers, drawn only under the advisory lock `PRESENCE_CHANGE_LOCK` held to
-- the commit, so they are committed in order.
CREATE SEQUENCE presence_change;
