"""The start-up baseline: a bare discord.py `commands.Bot` logging into the same fake Discord.

    python -m bench._bare_bot '{"token": ..., "api_base": ..., "gateway_url": ...}'

Same intents as the bot (guilds only), no cogs, no database, no webhook server.
"""

from __future__ import annotations

import json
import sys

import discord
import yarl
from discord.ext import commands


def main(options: dict[str, str]) -> None:
    discord.http.Route.BASE = options["api_base"].rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(options["gateway_url"])
    intents = discord.Intents.none()
    intents.guilds = True
    bot = commands.Bot(command_prefix=commands.when_mentioned, intents=intents, help_command=None)
    bot.run(options["token"], log_handler=None)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
