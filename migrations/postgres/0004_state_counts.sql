-- 0004 (PostgreSQL): how many jobs and generations are in each state, kept by triggers in the
-- same transaction as every insert, state change and deletion (cascades included), so /metrics
-- reads a few rows instead of counting the tables; see ../0004_state_counts.sql.

CREATE TABLE state_counts (
    entity text NOT NULL CHECK (entity IN ('jobs', 'generations')),
    state  text NOT NULL,
    rows   bigint NOT NULL,
    PRIMARY KEY (entity, state)
);

INSERT INTO state_counts (entity, state, rows) SELECT 'jobs', state, COUNT(*) FROM jobs GROUP BY state;
INSERT INTO state_counts (entity, state, rows)
    SELECT 'generations', state, COUNT(*) FROM generations GROUP BY state;

-- One function for both tables (TG_TABLE_NAME is the entity). A state change locks its two
-- counters in one fixed order (by state name), so two transactions moving jobs in opposite
-- directions between the same two states cannot deadlock on them.
CREATE FUNCTION state_counts_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO state_counts (entity, state, rows) VALUES (TG_TABLE_NAME, NEW.state, 1)
            ON CONFLICT (entity, state) DO UPDATE SET rows = state_counts.rows + 1;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE state_counts SET rows = rows - 1 WHERE entity = TG_TABLE_NAME AND state = OLD.state;
    ELSIF OLD.state < NEW.state THEN
        UPDATE state_counts SET rows = rows - 1 WHERE entity = TG_TABLE_NAME AND state = OLD.state;
        INSERT INTO state_counts (entity, state, rows) VALUES (TG_TABLE_NAME, NEW.state, 1)
            ON CONFLICT (entity, state) DO UPDATE SET rows = state_counts.rows + 1;
    ELSE
        INSERT INTO state_counts (entity, state, rows) VALUES (TG_TABLE_NAME, NEW.state, 1)
            ON CONFLICT (entity, state) DO UPDATE SET rows = state_counts.rows + 1;
        UPDATE state_counts SET rows = rows - 1 WHERE entity = TG_TABLE_NAME AND state = OLD.state;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION state_counts_keep();
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION state_counts_keep();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION state_counts_keep();

CREATE TRIGGER generations_count_insert AFTER INSERT ON generations
    FOR EACH ROW EXECUTE FUNCTION state_counts_keep();
CREATE TRIGGER generations_count_update AFTER UPDATE OF state ON generations
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION state_counts_keep();
-- Also fires for the generations deleted with their job (ON DELETE CASCADE, /forgetme).
CREATE TRIGGER generations_count_delete AFTER DELETE ON generations
    FOR EACH ROW EXECUTE FUNCTION state_counts_keep();
