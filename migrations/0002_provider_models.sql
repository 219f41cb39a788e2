-- 0002: what the bot has seen of the provider account's trained models, to settle submissions
-- that the provider never confirmed (`uncertain` jobs). Before each submission the bot lists the
-- account's models (a "listing"); a model first seen in a later listing, and claimed by no job,
-- may be the unconfirmed training.

CREATE TABLE provider_listings (
    id        INTEGER PRIMARY KEY,
    listed_at TEXT NOT NULL
);

CREATE TABLE provider_models (
    training_id   TEXT PRIMARY KEY,
    first_listing INTEGER NOT NULL REFERENCES provider_listings (id)
);
CREATE INDEX provider_models_first_listing ON provider_models (first_listing);

-- The listing taken just before this job was submitted; NULL when it could not be taken.
ALTER TABLE jobs ADD COLUMN baseline_listing INTEGER REFERENCES provider_listings (id);
