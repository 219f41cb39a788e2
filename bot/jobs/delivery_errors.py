"""Why a message could not be delivered, in the domain's terms.

The Discord adapter (`bot/delivery/messenger.py`) turns Discord's answers into these, so the
domain decides what to do about a failed post (another place, a retry, giving up) without
knowing Discord.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A delivery failed; subclasses say what to do about it."""


class MessageGone(DeliveryError):
    """The message (or its channel) no longer exists."""


class CannotPost(DeliveryError):
    """The bot may not post in that channel (missing access or permissions)."""


class DmsClosed(DeliveryError):
    """The user does not accept DMs from the bot."""


class TooLarge(DeliveryError):
    """The upload was refused as too large: sending it again won't help."""


class DiscordUnavailable(DeliveryError):
    """Discord did not answer usefully (5xx, connection errors, exhausted rate limits): retry later."""
