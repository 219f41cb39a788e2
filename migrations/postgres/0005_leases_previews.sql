-- 0005 (PostgreSQL): outbox leases, so several processes share the outbox (an item is leased to
-- the process delivering it until claimed_until), and previews kept in the database so Start
-- works from any process; see ../0005_leases_previews.sql.
ALTER TABLE outbox ADD COLUMN claimed_by text;
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;

CREATE TABLE previews (
    job_id      bigint PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    card_in_dms boolean NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE TABLE preview_photos (
    job_id   bigint NOT NULL REFERENCES previews (job_id) ON DELETE CASCADE,
    position integer NOT NULL,
    filename text NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (job_id, position)
);

-- A job that leaves `preview` (started, dismissed, expired) no longer needs its crops: whatever
-- moved it, they are deleted in the same transaction.
CREATE FUNCTION previews_drop_on_leaving_preview() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM previews WHERE job_id = NEW.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER previews_dropped_on_leaving_preview AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state = 'preview' AND NEW.state <> 'preview')
    EXECUTE FUNCTION previews_drop_on_leaving_preview();
