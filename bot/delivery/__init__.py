"""Discord delivery with the bot token: the outbox worker, job cards, generations' pictures."""
