"""Typed errors that reach users as clear messages with the right HTTP status."""

from __future__ import annotations


class SupportBotError(Exception):
    """Base error; `status` is the HTTP status the web layer answers with."""

    status = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class InvalidInput(SupportBotError):
    status = 422


class PayloadTooLarge(SupportBotError):
    status = 413


class NotFound(SupportBotError):
    status = 404


class Unauthorized(SupportBotError):
    status = 401


class Forbidden(SupportBotError):
    status = 403


class Conflict(SupportBotError):
    status = 409


class ModelNotAvailable(SupportBotError):
    """A configured model is not on disk; `detail` says the one command to run."""

    status = 503


class ModelTimeout(SupportBotError):
    """The model sent no first piece, or no complete answer, within the configured time."""

    status = 504


class ConfigurationError(SupportBotError):
    status = 500
