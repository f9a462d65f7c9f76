"""The HTTP status of each domain error: decided here, at the edge, so the domain knows nothing of HTTP."""

from __future__ import annotations

from support_bot.core.errors import (
    ConfigurationError,
    Conflict,
    Forbidden,
    InvalidInput,
    ModelNotAvailable,
    ModelTimeout,
    NotFound,
    PayloadTooLarge,
    SupportBotError,
    Unauthorized,
)
from support_bot.core.ratelimit import RateLimited

STATUS_BY_ERROR: dict[type[SupportBotError], int] = {
    InvalidInput: 422,
    PayloadTooLarge: 413,
    NotFound: 404,
    Unauthorized: 401,
    Forbidden: 403,
    Conflict: 409,
    RateLimited: 429,
    ModelNotAvailable: 503,
    ModelTimeout: 504,
    ConfigurationError: 500,
}
# Any other domain error is something wrong with the request as sent.
DEFAULT_STATUS = 400


def http_status(exc: SupportBotError) -> int:
    """The status for `exc`: that of its nearest class in STATUS_BY_ERROR (subclasses inherit it)."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return DEFAULT_STATUS
