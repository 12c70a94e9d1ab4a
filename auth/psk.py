"""Pre-shared keys for CoAP over DTLS: who a DTLS session authenticated as.

`PskIdentity` is what the DTLS transport hands the CoAP endpoint (as the remote's authenticated
claims) once a handshake with the identity `device@app` and that device's `psk` key succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PskIdentity:
    """The device a DTLS session proved to be, by its pre-shared key."""

    application: str
    device: str


__all__ = ["PskIdentity"]
