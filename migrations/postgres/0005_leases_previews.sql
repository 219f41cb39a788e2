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
