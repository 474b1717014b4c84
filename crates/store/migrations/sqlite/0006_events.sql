-- Events are ordered and kept by the time the control plane received them, not the time their
-- agent claims (a clock in 2099 would otherwise sort as newest for ever), and retained per
-- site by count and age.

-- Events stored before this migration: their claimed time is all there is.
ALTER TABLE events ADD COLUMN received_at TEXT NOT NULL DEFAULT '';
UPDATE events SET received_at = at;
DROP INDEX events_site;
CREATE INDEX events_site_received ON events (site, received_at, host, seq, idx);

-- How many events each site keeps (so retention needs no COUNT(*) per report), and how many
-- retention removed (a loss is reported, not silent).
CREATE TABLE event_counts (
    site   TEXT PRIMARY KEY,
    kept   INTEGER NOT NULL,
    pruned INTEGER NOT NULL
);
INSERT INTO event_counts (site, kept, pruned) SELECT site, COUNT(*), 0 FROM events GROUP BY site;
