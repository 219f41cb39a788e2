-- 0001: the whole product's schema: jobs, their events, the Discord outbox, users, key/value state.
-- Timestamps are ISO-8601 UTC strings with a +00:00 offset, so they sort as text.

CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY,
    owner_id            INTEGER NOT NULL,
    guild_id            INTEGER,                -- NULL when run from a DM
    channel_id          INTEGER NOT NULL,       -- where /train was run
    card_channel_id     INTEGER,                -- where the job's card lives (the channel, or the owner's DM)
    card_message_id     INTEGER,
    name                TEXT NOT NULL,
    state               TEXT NOT NULL,
    provider_status     TEXT,                   -- the provider's last word, even one we do not know
    training_id         TEXT UNIQUE,
    params              TEXT NOT NULL,          -- JSON of the submitted parameters (never the API key)
    image_count         INTEGER NOT NULL CHECK (image_count >= 0),
    image_urls          TEXT,                   -- JSON list of the card attachments handed to the provider
    webhook_secret_hash TEXT,                   -- sha256 hex of the per-job webhook secret
    eta_text            TEXT,
    last_error          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,          -- any change, including a poll that found nothing new
    progressed_at       TEXT NOT NULL,          -- last forward move: the stall deadline counts from here
    submitted_at        TEXT,
    finished_at         TEXT
);

-- "This user's jobs, newest first" (/mymodels, /status autocomplete, quotas).
CREATE INDEX jobs_owner_newest ON jobs (owner_id, id DESC);
-- Per-guild daily quota.
CREATE INDEX jobs_guild_submitted ON jobs (guild_id, submitted_at) WHERE submitted_at IS NOT NULL;
-- "Active jobs not updated since T" (the reconciler). A partial index keeps it small.
CREATE INDEX jobs_active_updated ON jobs (updated_at)
    WHERE state NOT IN ('model_ready', 'cancelled', 'failed', 'expired');

CREATE TABLE job_events (
    id           INTEGER PRIMARY KEY,
    job_id       INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    status       TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('webhook', 'poll', 'user', 'system')),
    payload      TEXT,                         -- the raw body or a short JSON note
    received_at  TEXT NOT NULL,
    applied      INTEGER NOT NULL CHECK (applied IN (0, 1)),   -- did it move the job?
    UNIQUE (job_id, status)                    -- a status is recorded once per job
);

-- Discord work written in the same transaction as the state change that caused it.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    job_id          INTEGER REFERENCES jobs (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('card', 'dm')),
    dedupe_key      TEXT NOT NULL UNIQUE,      -- e.g. card:42 (coalesced) or dm:42:model_ready
    payload         TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    TEXT,
    last_error      TEXT
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL;

CREATE TABLE users (
    user_id       INTEGER PRIMARY KEY,
    dms_closed_at TEXT                          -- set when a DM failed with 50007
);

CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
