"""Errors whose message is meant for the Discord user (the error handler shows them as-is)."""


class UserError(Exception):
    """Something the user can understand and act on; `str(error)` is the message to show."""
