"""Domain errors: each says what is wrong in words a user can act on. The web layer decides the HTTP status."""

from __future__ import annotations


class SupportBotError(Exception):
    """Base error; `detail` is the message the user reads."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class InvalidInput(SupportBotError):
    """The request or the data sent is not acceptable as it is."""


class PayloadTooLarge(SupportBotError):
    """What was sent is larger than the configured limit."""


class NotFound(SupportBotError):
    """No such thing, or not visible to this caller."""


class Unauthorized(SupportBotError):
    """Not signed in, or the credentials are wrong."""


class Forbidden(SupportBotError):
    """Signed in, but not allowed to do this."""


class Conflict(SupportBotError):
    """The thing changed meanwhile, or the action clashes with its current state."""


class ModelNotAvailable(SupportBotError):
    """A configured model is not on disk; `detail` says the one command to run."""


class ModelTimeout(SupportBotError):
    """The model sent no first piece, or no complete answer, within the configured time."""


class ConfigurationError(SupportBotError):
    """The server is configured in a way that cannot work."""
