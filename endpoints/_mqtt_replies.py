"""The MQTT device endpoint's one table: Hawser's typed errors → MQTT 5 reason codes, looked up along
the error's MRO, then narrowed to the codes the answering packet may carry (a PUBACK has no "bad
user name or password" and no "server busy"). 3.1.1 CONNACK return codes are mapped from these by
the codec. Anything that is not a `HawserError` is a bug: 0x80 (unspecified error).
"""

from __future__ import annotations

from collections.abc import Mapping

from hawser.errors import (
    AuthenticationError,
    BadJson,
    BadRequest,
    BusUnavailable,
    Forbidden,
    HawserError,
    InvalidName,
    NotFound,
    Overloaded,
    PayloadTooLarge,
)
from hawser.mqtt.packets import Reason

#: The one table of this adapter: error class → reason code (MQTT 5 section 2.4).
MQTT_REASON: Mapping[type[HawserError], Reason] = {
    AuthenticationError: Reason.BAD_USER_NAME_OR_PASSWORD,  # 3.1.1: return code 4
    Forbidden: Reason.NOT_AUTHORIZED,  # disabled, gateway not allowed; 3.1.1: return code 5
    NotFound: Reason.NOT_AUTHORIZED,  # the application's topic is gone: it was deleted
    BadJson: Reason.PAYLOAD_FORMAT_INVALID,  # the payload does not match its JSON content type
    InvalidName: Reason.TOPIC_NAME_INVALID,  # channel or as-device with characters names may not hold
    BadRequest: Reason.IMPLEMENTATION_SPECIFIC_ERROR,  # "valid, but not accepted by this server"
    PayloadTooLarge: Reason.QUOTA_EXCEEDED,  # over max_payload_bytes (packets over the limit: 0x95)
    BusUnavailable: Reason.SERVER_UNAVAILABLE,  # 3.1.1: return code 3
    Overloaded: Reason.SERVER_BUSY,  # too many password checks waiting; 3.1.1: return code 3
}

#: Reason codes a PUBACK may carry (MQTT 5 section 3.4.2.1).
_PUBACK = frozenset({
    Reason.SUCCESS, Reason.NO_MATCHING_SUBSCRIBERS, Reason.UNSPECIFIED_ERROR, Reason.IMPLEMENTATION_SPECIFIC_ERROR,
    Reason.NOT_AUTHORIZED, Reason.TOPIC_NAME_INVALID, Reason.PACKET_IDENTIFIER_IN_USE, Reason.QUOTA_EXCEEDED,
    Reason.PAYLOAD_FORMAT_INVALID,
})
#: Reason codes a CONNACK may carry (MQTT 5 section 3.2.2.2) that this table produces.
_CONNACK = frozenset({
    Reason.UNSPECIFIED_ERROR, Reason.IMPLEMENTATION_SPECIFIC_ERROR, Reason.BAD_USER_NAME_OR_PASSWORD,
    Reason.NOT_AUTHORIZED, Reason.SERVER_UNAVAILABLE, Reason.SERVER_BUSY, Reason.QUOTA_EXCEEDED,
    Reason.PAYLOAD_FORMAT_INVALID, Reason.TOPIC_NAME_INVALID,
})


def reason_for(error: BaseException) -> Reason:
    """The table's reason for `error`, by the first class of its MRO found; 0x80 otherwise."""
    if isinstance(error, HawserError):
        for cls in type(error).__mro__:
            if cls in MQTT_REASON:
                return MQTT_REASON[cls]
    return Reason.UNSPECIFIED_ERROR


def puback_reason(error: BaseException) -> Reason:
    """The PUBACK refusing a publish for `error`. A credential that stopped working mid-session
    (a gateway's publish for another device re-checks it) is "not authorized"; capacity and bus
    trouble, which a PUBACK cannot name, is "unspecified error" (retry later)."""
    reason = reason_for(error)
    if reason is Reason.BAD_USER_NAME_OR_PASSWORD:
        return Reason.NOT_AUTHORIZED
    return reason if reason in _PUBACK else Reason.UNSPECIFIED_ERROR


def connack_reason(error: BaseException) -> Reason:
    """The CONNACK refusing a connection for `error`."""
    reason = reason_for(error)
    return reason if reason in _CONNACK else Reason.UNSPECIFIED_ERROR


__all__ = ["MQTT_REASON", "connack_reason", "puback_reason", "reason_for"]
