-- 0004: how many jobs and generations are in each state, kept by triggers in the same
-- transaction as every insert, state change and deletion. /metrics reads these few rows at each
-- scrape instead of counting the tables (a GROUP BY over a million jobs takes most of a second,
-- and holds the one connection that every webhook waits for).

CREATE TABLE state_counts (
    entity TEXT NOT NULL CHECK (entity IN ('jobs', 'generations')),
    state  TEXT NOT NULL,
    rows   INTEGER NOT NULL,
    PRIMARY KEY (entity, state)
) WITHOUT ROWID;

INSERT INTO state_counts (entity, state, rows) SELECT 'jobs', state, COUNT(*) FROM jobs GROUP BY state;
INSERT INTO state_counts (entity, state, rows)
    SELECT 'generations', state, COUNT(*) FROM generations GROUP BY state;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO state_counts (entity, state, rows) VALUES ('jobs', NEW.state, 1)
        ON CONFLICT (entity, state) DO UPDATE SET rows = rows + 1;
END;

CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs WHEN OLD.state IS NOT NEW.state
BEGIN
    UPDATE state_counts SET rows = rows - 1 WHERE entity = 'jobs' AND state = OLD.state;
    INSERT INTO state_counts (entity, state, rows) VALUES ('jobs', NEW.state, 1)
        ON CONFLICT (entity, state) DO UPDATE SET rows = rows + 1;
END;

CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
BEGIN
    UPDATE state_counts SET rows = rows - 1 WHERE entity = 'jobs' AND state = OLD.state;
END;

CREATE TRIGGER generations_count_insert AFTER INSERT ON generations
BEGIN
    INSERT INTO state_counts (entity, state, rows) VALUES ('generations', NEW.state, 1)
        ON CONFLICT (entity, state) DO UPDATE SET rows = rows + 1;
END;

CREATE TRIGGER generations_count_update AFTER UPDATE OF state ON generations WHEN OLD.state IS NOT NEW.state
BEGIN
    UPDATE state_counts SET rows = rows - 1 WHERE entity = 'generations' AND state = OLD.state;
    INSERT INTO state_counts (entity, state, rows) VALUES ('generations', NEW.state, 1)
        ON CONFLICT (entity, state) DO UPDATE SET rows = rows + 1;
END;

-- Also fires for the generations deleted with their job (ON DELETE CASCADE, /forgetme).
CREATE TRIGGER generations_count_delete AFTER DELETE ON generations
BEGIN
    UPDATE state_counts SET rows = rows - 1 WHERE entity = 'generations' AND state = OLD.state;
END;
