-- Operators label hosts (`atoll label host`) as they label sites: a JSON object of strings,
-- kept apart from the inventory the agent reports, so a new inventory never drops a label.
ALTER TABLE hosts ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
