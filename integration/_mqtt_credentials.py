"""Where an application's credential is in an MQTT CONNECT, as Drogue's MQTT integration reads it
(`mqtt-integration/src/service/app.rs`). Nothing here does I/O.

- a user name and no password: the user name is a bearer token (the only way in 3.1.1, which has no
  password without a user name);
- a password and no user name (MQTT 5): the password is a bearer token;
- both: the user name is the user, and the password an access token that must belong to them.
An empty password counts as none (`mosquitto_sub -u <token> -P ""` sends one). Drogue lets clients
with neither in anonymously, with nothing to read; Hawser has nothing anonymous, so it refuses them.
"""

from __future__ import annotations

from hawser.errors import BadCredentials, MissingCredentials
from integration._credentials import TokenCredential


def credential_of(username: str | None, password: bytes | None) -> TokenCredential:
    """The credential of a CONNECT; raises `MissingCredentials` or `BadCredentials`."""
    if password:
        try:
            secret = password.decode()
        except UnicodeDecodeError:
            raise BadCredentials("the password must be an access token (UTF-8 text)") from None
        return TokenCredential(secret, username) if username else TokenCredential(secret)
    if username:
        return TokenCredential(username)
    raise MissingCredentials("a token is required: as the user name, or the user name and an access "
                             "token as the password")


__all__ = ["credential_of"]
