-- Every manifest write takes the next manifest-change number, so that the fleet of every
-- control plane follows the manifests table as the host book follows the hosts table: it
-- reads only what changed after the highest number it saw. Manifests stored before this
-- migration keep 0: a control plane reads every manifest's head at start, and follows from
-- the highest number then.
ALTER TABLE manifests ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX manifests_changed ON manifests (changed);
