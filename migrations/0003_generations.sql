-- 0003: pictures made with a trained LoRA (/imagine, and the samples sent with the ready DM).
-- A generation is written before the provider is called, like a job; its pictures are kept here
-- from download until they are posted on Discord (then only their Discord links remain).

CREATE TABLE generations (
    id                  INTEGER PRIMARY KEY,
    job_id              INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,  -- the trained model
    owner_id            INTEGER NOT NULL,
    guild_id            INTEGER,
    channel_id          INTEGER,                -- where the result is posted; NULL: the owner's DMs
    kind                TEXT NOT NULL CHECK (kind IN ('imagine', 'sample')),
    state               TEXT NOT NULL,
    user_prompt         TEXT NOT NULL,          -- as typed (shown, and reused by Again)
    prompt              TEXT NOT NULL,          -- as sent: the model's trigger words first
    negative_prompt     TEXT,
    strength            REAL NOT NULL,
    samples             INTEGER NOT NULL CHECK (samples BETWEEN 1 AND 4),
    seed                INTEGER NOT NULL,
    width               INTEGER NOT NULL,
    height              INTEGER NOT NULL,
    base_model_id       TEXT NOT NULL,
    lora_model          TEXT NOT NULL,
    safety_checker      INTEGER NOT NULL CHECK (safety_checker IN (0, 1)),
    age_restricted      INTEGER NOT NULL CHECK (age_restricted IN (0, 1)),
    request_id          TEXT,                   -- the provider's id while processing
    attempts            INTEGER NOT NULL DEFAULT 0,  -- submissions refused because the queue was full
    last_error          TEXT,
    reply_to_message_id INTEGER,                -- a sample that missed the ready DM follows it as a reply
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    submitted_at        TEXT,
    finished_at         TEXT,
    next_check_at       TEXT NOT NULL           -- when the runner looks at it next
);
CREATE INDEX generations_due ON generations (next_check_at) WHERE state IN ('queued', 'processing');
CREATE INDEX generations_owner_created ON generations (owner_id, created_at);
CREATE INDEX generations_job ON generations (job_id);
CREATE UNIQUE INDEX generations_one_sample_set ON generations (job_id) WHERE kind = 'sample';

CREATE TABLE generation_images (
    generation_id INTEGER NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    data          BLOB,                        -- the picture, until it is posted
    content_type  TEXT NOT NULL,
    nsfw          INTEGER NOT NULL CHECK (nsfw IN (0, 1)),
    url           TEXT,                        -- its Discord link once posted
    PRIMARY KEY (generation_id, position)
);

-- The outbox now also carries generation results. SQLite cannot change a CHECK constraint in
-- place, so the table is rebuilt with its rows.
CREATE TABLE outbox_0003 (
    id              INTEGER PRIMARY KEY,
    job_id          INTEGER REFERENCES jobs (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('card', 'dm', 'generation')),
    dedupe_key      TEXT NOT NULL UNIQUE,
    payload         TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    TEXT,
    last_error      TEXT
);
INSERT INTO outbox_0003 (id, job_id, kind, dedupe_key, payload, created_at, next_attempt_at, attempts, delivered_at,
                         last_error)
    SELECT id, job_id, kind, dedupe_key, payload, created_at, next_attempt_at, attempts, delivered_at, last_error
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_0003 RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
