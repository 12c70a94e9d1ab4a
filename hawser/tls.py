"""Server TLS contexts for the TLS listeners (MQTT 8883 and 8884), from configured PEM files or, when
none are configured, from a self-signed certificate generated once under `data_dir/tls/`.

The generated certificate names `localhost`, 127.0.0.1 and ::1, so that `make run` gives working TLS
ports out of the box: clients trust that one file (`mosquitto_pub --cafile .hawser/tls/cert.pem`).
Production deployments configure their own chain and key. The key file is written owner-only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hawser.config import TlsSettings

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


def ensure_self_signed(folder: Path) -> tuple[Path, Path]:
    """The certificate and key under `folder`, generated (EC P-256, ten years) if missing."""
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hawser (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names = x509.SubjectAlternativeName([
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(alt_names, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def certificate_files(tls: TlsSettings, data_dir: Path) -> tuple[Path, Path]:
    """The configured chain and key, or the generated self-signed pair."""
    if tls.cert is None and tls.key is None:
        return ensure_self_signed(data_dir / "tls")
    if tls.cert is None or tls.key is None:
        raise ValueError("TLS needs both a certificate (cert) and a key (key), or neither")
    return tls.cert, tls.key


def server_context(tls: TlsSettings, data_dir: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context. Client certificates are not requested yet (X.509 device
    authentication comes with its own issue and will set `verify_mode` here)."""
    cert, key = certificate_files(tls, data_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


__all__ = ["certificate_files", "ensure_self_signed", "server_context"]
