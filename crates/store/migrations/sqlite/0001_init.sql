-- The store's first schema. Specs and manifests are canonical JSON text: the control plane owns
-- their shape, the store only keeps them and their bookkeeping.

CREATE TABLE meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO meta (id, version) VALUES (1, 0);

CREATE TABLE resources (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE app_versions (
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    spec       TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

-- One row per site that ever had a manifest; the row outlives the site so that a site deleted
-- and created again continues its revisions instead of starting over.
CREATE TABLE manifests (
    site       TEXT PRIMARY KEY,
    revision   INTEGER NOT NULL,
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
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
