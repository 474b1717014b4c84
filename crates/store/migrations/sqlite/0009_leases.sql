-- Leases: a loop that must run on one control-plane replica at a time (the rollout controller)
-- runs while its replica holds the lease row of that name. `fence` grows by one whenever the
-- holder changes and is never reset (a release keeps the row), so a commit fenced with an old
-- number is refused. `expires_at` is in milliseconds since the Unix epoch.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    fence      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
