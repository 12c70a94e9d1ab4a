"""Authentication and authorization: devices (passwords, the verified-credential cache) and users
(access tokens; OIDC later). Sits above `registry` and `hawser` in the import order."""

from __future__ import annotations

from auth.devices import AuthOutcome, DeviceAuthenticator, DeviceCredentials

__all__ = ["AuthOutcome", "DeviceAuthenticator", "DeviceCredentials"]
