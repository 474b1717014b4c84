-- Rollouts decide which version each site's manifest carries, so their state is part of the
-- desired state: written in the same versioned commits as the manifests it changes.

-- The current (running or last finished) rollout of each deployment, as the control plane's
-- JSON.
CREATE TABLE rollouts (
    deployment TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Rollouts that a newer one replaced, oldest first.
CREATE TABLE rollout_history (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL,
    state      TEXT NOT NULL,
    ended_at   TEXT NOT NULL
);
CREATE INDEX rollout_history_deployment ON rollout_history (deployment, seq);
