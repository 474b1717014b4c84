-- Every manifest write takes the next manifest-change number, from the sequence
-- `manifest_change` drawn under an advisory lock held to commit (see src/postgres.rs), so the
-- fleet of every replica follows the manifests table by number and never misses a change.
-- Manifests stored before this migration keep 0: a replica reads every manifest's head at
-- start, and follows from the highest number then. CACHE 1, as for `host_change`.
CREATE SEQUENCE manifest_change AS BIGINT CACHE 1;
ALTER TABLE manifests ADD COLUMN changed BIGINT NOT NULL DEFAULT 0;
CREATE INDEX manifests_changed ON manifests (changed);
