"""The typed errors of Hawser, shared by every service.

Errors say what went wrong, never which status to send: each protocol adapter keeps one table that
maps these classes (looked up along the MRO) to its own reply. Policy lives in attributes
(`retriable`, `retry_after`), never in message text. Anything that is not a `HawserError` is a bug.
"""

from __future__ import annotations


class HawserError(Exception):
    """Base of every error a client may be told about."""

    #: A short, stable, machine-readable slug (used as the problem `type` suffix).
    code: str = "error"
    #: Whether the same request may succeed if repeated later, unchanged.
    retriable: bool = False
    #: Seconds after which a retry makes sense (sent as `Retry-After`, CoAP Max-Age, ...), if known.
    retry_after: int | None = None

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.__class__.__doc__ or self.code)
        self.detail = detail or (self.__class__.__doc__ or self.code).strip()


# --- who is asking -------------------------------------------------------------------------------


class AuthenticationError(HawserError):
    """Missing or invalid credentials."""

    code = "unauthorized"


class MissingCredentials(AuthenticationError):
    """No credentials were presented."""

    code = "missing-credentials"


class BadCredentials(AuthenticationError):
    """The credentials are malformed, unknown or wrong."""

    code = "bad-credentials"


class Forbidden(HawserError):
    """The caller is known but not allowed to do this."""

    code = "forbidden"


class ApplicationDisabled(Forbidden):
    """The application is disabled."""

    code = "application-disabled"


class DeviceDisabled(Forbidden):
    """The device is disabled."""

    code = "device-disabled"


class GatewayNotAllowed(Forbidden):
    """The device is not listed as a gateway of the device it publishes for."""

    code = "gateway-not-allowed"


# --- what is asked -------------------------------------------------------------------------------


class BadRequest(HawserError):
    """The request is malformed."""

    code = "bad-request"


class InvalidName(BadRequest):
    """A channel, device or application name has characters that are not allowed."""

    code = "invalid-name"


class BadJson(BadRequest):
    """The payload is not valid JSON although its content type says it is."""

    code = "bad-json"


class PayloadTooLarge(HawserError):
    """The payload exceeds the configured maximum size."""

    code = "payload-too-large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class NotFound(HawserError):
    """The resource does not exist."""

    code = "not-found"


class UnknownTopic(NotFound):
    """The bus has no such topic (its application was deleted); sends never create topics."""

    code = "unknown-topic"


class Conflict(HawserError):
    """The resource exists already, or was changed since it was read."""

    code = "conflict"


class StaleResourceVersion(Conflict):
    """The resourceVersion given is not the current one."""

    code = "stale-resource-version"


class AlreadyExists(Conflict):
    """A resource of that name exists already."""

    code = "already-exists"


# --- the bus -------------------------------------------------------------------------------------


class BusUnavailable(HawserError):
    """The event bus cannot take the message now; try again later."""

    code = "bus-unavailable"
    retriable = True

    def __init__(self, detail: str = "", *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# --- capacity ------------------------------------------------------------------------------------


class Overloaded(HawserError):
    """Too much work is waiting already (e.g. password verifications); try again shortly."""

    code = "overloaded"
    retriable = True

    def __init__(self, detail: str = "", *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


__all__ = [
    "AlreadyExists",
    "ApplicationDisabled",
    "AuthenticationError",
    "BadCredentials",
    "BadJson",
    "BadRequest",
    "BusUnavailable",
    "Conflict",
    "DeviceDisabled",
    "Forbidden",
    "GatewayNotAllowed",
    "HawserError",
    "InvalidName",
    "MissingCredentials",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "StaleResourceVersion",
    "UnknownTopic",
]
