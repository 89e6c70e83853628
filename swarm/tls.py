"""A throwaway certificate authority for the embedded server's TLS (`swarm server start --tls`).

`Certificates(folder).ensure()` makes, once, in `folder`: `ca.crt` and `ca.key` (the authority),
`server.crt` and `server.key` for 127.0.0.1, ::1 and localhost, and `client.crt` and `client.key` for
clients that want mutual TLS, both signed by the CA. Keys are ECDSA P-256, written mode 0600 in a folder
of mode 0700; they are made again when a file is missing, unreadable or about to expire. The tests use
the same certificates. `cryptography` is imported only when certificates are made or checked.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

VALID_DAYS = 3650
"""How long the certificates are valid; they are made again within a day of the end."""

_FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")


@dataclass(frozen=True, slots=True)
class Certificates:
    """The CA, server and client certificate files in `folder`."""

    folder: Path

    @property
    def ca(self) -> Path:
        """The CA certificate: what a client trusts (`SWARM_TLS_CA`)."""
        return self.folder / "ca.crt"

    @property
    def server_cert(self) -> Path:
        """The server's certificate, for 127.0.0.1, ::1 and localhost."""
        return self.folder / "server.crt"

    @property
    def server_key(self) -> Path:
        """The server certificate's key."""
        return self.folder / "server.key"

    @property
    def client_cert(self) -> Path:
        """A client certificate signed by the CA (`SWARM_TLS_CERT`), for mutual TLS."""
        return self.folder / "client.crt"

    @property
    def client_key(self) -> Path:
        """The client certificate's key (`SWARM_TLS_KEY`)."""
        return self.folder / "client.key"

    def ensure(self) -> Certificates:
        """These certificates, made now when a file is missing, unreadable or expires within a day."""
        if not self._usable():
            self._make()
        return self

    def _usable(self) -> bool:
        from cryptography import x509  # noqa: PLC0415 - only `--tls` needs it

        soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        try:
            if not all((self.folder / name).is_file() for name in _FILES):
                return False
            return all(x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc > soon
                       for path in (self.ca, self.server_cert, self.client_cert))
        except (OSError, ValueError):
            return False

    def _make(self) -> None:
        import ipaddress  # noqa: PLC0415

        from cryptography import x509  # noqa: PLC0415 - only `--tls` needs it
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        ca_key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarm embedded server CA")])
        ca = _sign(
            _builder(ca_name, ca_name, ca_key, ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True),
            ca_key,
        )
        hosts = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")),
                 x509.DNSName("localhost")]
        leaves = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
        for name, purpose in leaves.items():
            key = _key()
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"swarm {name}")])
            cert = _sign(
                _builder(subject, ca_name, key, ca_key)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_usage(cert_sign=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
                .add_extension(x509.SubjectAlternativeName(hosts), critical=False),
                ca_key,
            )
            _write(self.folder / f"{name}.key", _pem_key(key), private=True)
            _write(self.folder / f"{name}.crt", _pem(cert), private=False)
        _write(self.folder / "ca.key", _pem_key(ca_key), private=True)
        _write(self.ca, _pem(ca), private=False)  # last: the files are complete once it is there


def _key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: x509.Name, issuer: x509.Name, key: EllipticCurvePrivateKey,
             issuer_key: EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    from cryptography import x509  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a client clock a little behind still accepts it
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    from cryptography import x509  # noqa: PLC0415

    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _sign(builder: x509.CertificateBuilder, key: EllipticCurvePrivateKey) -> x509.Certificate:
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415

    return builder.sign(key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

    return cert.public_bytes(Encoding.PEM)


def _pem_key(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization as s  # noqa: PLC0415

    return key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write `path` whole (a temporary file renamed over it); a key is mode 0600 from its first byte."""
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    part.replace(path)
