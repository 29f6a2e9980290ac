"""The shop's error hierarchy: what a service may raise and what an adapter translates driver errors into.

No framework imports here; shared_lib.web holds the one table that maps these to HTTP status and body.
"""

from __future__ import annotations


class ShopError(Exception):
    """Base of every error the shop raises on purpose. `message` is safe to show to a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DomainError(ShopError):
    """An expected business outcome; never retried."""


class InvalidInputError(DomainError):
    """The request is malformed or out of range (400, code 3)."""


class NotFoundError(DomainError):
    """The thing asked for does not exist (404, code 5)."""


class PreconditionError(DomainError):
    """The request is well formed but the system's state refuses it (412 in cart, 400 in loms; code 9)."""


class UnauthenticatedError(DomainError):
    """Missing or wrong credentials (401, code 16)."""


class ForbiddenError(DomainError):
    """The caller may not do this, e.g. send an event from a source not configured (403, code 7)."""


class RateLimitedError(DomainError):
    """The caller is over its configured rate (429, code 8)."""


class IdempotencyKeyReusedError(DomainError):
    """An Idempotency-Key was sent again with a different request (422, code 3)."""


class TransientError(ShopError):
    """An infrastructure hiccup, safe to retry (503, code 14; a redelivery for events)."""


GRPC_FAILED_PRECONDITION = 9  # PreconditionError's code: loms answers it with a 400, cart's client reads it
