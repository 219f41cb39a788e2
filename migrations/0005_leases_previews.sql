-- Several processes may share one database (PostgreSQL), so an outbox item is leased to the
-- process delivering it: another process skips it until the lease ends, and a killed process's
-- items are picked up once their lease has run out.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until TEXT;

-- A preview's crops live in the database, not in one process's memory, so Start works from any
-- process (and after a restart, until the preview times out). Deleted with the job (/forgetme)
-- and as soon as the preview is started or expires: they are the member's photos.
CREATE TABLE previews (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    card_in_dms INTEGER NOT NULL CHECK (card_in_dms IN (0, 1)),
    expires_at  TEXT NOT NULL
);
CREATE TABLE preview_photos (
    job_id   INTEGER NOT NULL REFERENCES previews (job_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    filename TEXT NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (job_id, position)
);

-- A job that leaves `preview` (started, dismissed, expired) no longer needs its crops: whatever
-- moved it, they are deleted in the same transaction.
CREATE TRIGGER previews_dropped_on_leaving_preview AFTER UPDATE OF state ON jobs
WHEN OLD.state = 'preview' AND NEW.state <> 'preview'
BEGIN
    DELETE FROM previews WHERE job_id = NEW.id;
END;
