-- A host's membership as one table that every cache follows: a host is attached to its site
-- until the site is deleted, then detached for good (a site re-created under the same name is
-- a new site no old host belongs to). `changed` is the host-change sequence: every change of a
-- host's membership or credentials takes the next number, so a cache (in this process or in
-- another replica) reads only what changed since the number it last saw.
ALTER TABLE hosts ADD COLUMN state TEXT NOT NULL DEFAULT 'attached';
ALTER TABLE hosts ADD COLUMN detached_at TEXT;
ALTER TABLE hosts ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX hosts_changed ON hosts (changed);

-- A renewal replaces the host's certificate: the one it replaced is still accepted until
-- `previous_until` (requests in flight, an agent restarting), never after; only the current
-- one renews. A new sealing key sent by a host that has one already waits in
-- `pending_recipient` for an operator's approval.
ALTER TABLE hosts ADD COLUMN previous_serial TEXT;
ALTER TABLE hosts ADD COLUMN previous_until TEXT;
ALTER TABLE hosts ADD COLUMN pending_recipient TEXT;
