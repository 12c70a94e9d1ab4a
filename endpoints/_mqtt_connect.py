"""The pure decisions of an MQTT device's CONNECT: which credentials it presents, whether its session
request can be served, and what the CONNACK announces. Nothing here does I/O.

Credentials as Drogue's `authenticate_mqtt` (`endpoint-common/src/auth.rs`) reads them: a user name
`<device>@<app>` with the device's password (Hawser also takes an alias or a unique username before
the `@`, as over HTTP), or a user name without `@` whose password is that of the `user` credential of
the device the client id names as `<device>@<app>` (Drogue's `UsernamePassword`). X.509 client
certificates come with the security issue: `ssl_object` is their seam.
"""

from __future__ import annotations

import dataclasses
import ssl

from auth.devices import DeviceCredentials
from endpoints.uplink import MAX_PASSWORD_LENGTH, check_login_name, split_user
from hawser.errors import BadCredentials, MissingCredentials
from hawser.mqtt.packets import Connect, Properties, ProtocolVersion, Reason

#: What every CONNACK of the device endpoint announces beyond the stream's limits (as Drogue's
#: `mqtt-endpoint/src/service/app.rs`): wildcards only in the command inbox filters, no shared
#: subscriptions, no subscription identifiers.
SERVER_FEATURES = Properties(
    wildcard_subscription_available=1, shared_subscription_available=0, subscription_identifier_available=0
)


def connect_credentials(connect: Connect, ssl_object: ssl.SSLObject | None = None) -> DeviceCredentials:
    """The credentials of `connect`; raises MissingCredentials or BadCredentials (refused with
    0x86, 3.1.1 return code 4) before anything is looked up."""
    username, password = connect.username, connect.password
    if username is None and password is None:
        # The seam for X.509: a verified client certificate (ssl_object.getpeercert()) will name
        # the application (issuer) and the device (subject) here.
        raise MissingCredentials("MQTT user name and password required")
    if username is None or password is None:
        raise BadCredentials("MQTT user name and password go together")
    try:
        secret = password.decode("utf-8")
    except UnicodeDecodeError:
        raise BadCredentials("the password is not UTF-8 text") from None
    if len(secret) > MAX_PASSWORD_LENGTH:
        raise BadCredentials("password too long")
    if "@" in username:
        application, user = split_user(username)
        return DeviceCredentials(application=application, user=user, password=secret)
    # Drogue's UsernamePassword: the client id names the device, the user name its `user` credential.
    if "@" not in connect.client_id:
        raise BadCredentials("user name must be <device>@<application>, or the client id <device>@<application>")
    application, device = split_user(connect.client_id)
    return DeviceCredentials(
        application=application, user=check_login_name("user", username), password=secret, device=device
    )


def connect_refusal(connect: Connect) -> tuple[Reason, str] | None:
    """Why `connect` is refused whoever sends it, with the reason string, or None. Hawser keeps no
    session state past a connection. MQTT 3.1.1 gives a server no way to decline `clean session
    = 0` but refusing it (Drogue refuses it too, with return code 4 from its catch-all): return code
    2, identifier rejected, the code 3.1.1 itself uses for a client id that cannot hold a persistent
    session (MQTT 5 can be told instead: see `connack_properties`). MQTT 5 enhanced authentication
    is not offered: 0x8C, bad authentication method."""
    if connect.protocol_version is ProtocolVersion.V311 and not connect.clean_start:
        return Reason.CLIENT_IDENTIFIER_NOT_VALID, "persistent sessions are not supported: use a clean session"
    if connect.properties.authentication_method is not None:
        return Reason.BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported"
    return None


def connack_properties(connect: Connect) -> Properties:
    """The CONNACK's own properties. An MQTT 5 client asking for a session that outlives the
    connection (Session Expiry Interval > 0, with or without Clean Start) is told the interval is 0
    (section 3.2.2.3.2 lets the server choose), and `session present` is always 0: nothing is kept,
    and since commands are best effort, nothing could have been kept for it anyway."""
    expiry = connect.properties.session_expiry_interval
    if connect.protocol_version is ProtocolVersion.V5 and expiry:
        return dataclasses.replace(SERVER_FEATURES, session_expiry_interval=0)
    return SERVER_FEATURES


__all__ = ["SERVER_FEATURES", "connack_properties", "connect_credentials", "connect_refusal"]
