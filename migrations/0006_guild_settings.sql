-- 0006: each server's own settings for /lora-admin. A row holds only the values the server
-- overrides (a JSON object by setting key; a key left out means the bot's default from the
-- environment), and each change is logged with who made it. When the bot leaves a server its
-- row is kept for a while (left_at) so a quick return finds its settings, then purged.

CREATE TABLE guild_settings (
    guild_id   INTEGER PRIMARY KEY,
    settings   TEXT NOT NULL DEFAULT '{}',     -- JSON object of the overridden values, by setting key
    updated_at TEXT NOT NULL,
    left_at    TEXT                            -- when the bot left the server; NULL while it is there
);
-- "Servers left before T" (the purge). Partial: nearly every row has no left_at.
CREATE INDEX guild_settings_left ON guild_settings (left_at) WHERE left_at IS NOT NULL;

CREATE TABLE guild_setting_changes (
    id         INTEGER PRIMARY KEY,
    guild_id   INTEGER NOT NULL REFERENCES guild_settings (guild_id) ON DELETE CASCADE,
    setting    TEXT NOT NULL,
    old_value  TEXT,                           -- JSON; NULL: the default
    new_value  TEXT,                           -- JSON; NULL: back to the default
    changed_by INTEGER NOT NULL,               -- the member who changed it
    changed_at TEXT NOT NULL
);
-- "This server's latest changes, newest first" (/lora-admin).
CREATE INDEX guild_setting_changes_newest ON guild_setting_changes (guild_id, id DESC);

-- "This server's jobs in these states, newest first" (/lora-admin). Partial: a DM job has no server.
CREATE INDEX jobs_guild_newest ON jobs (guild_id, id DESC) WHERE guild_id IS NOT NULL;
