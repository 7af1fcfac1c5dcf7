"""TLS for the listeners: TorchServe's key material keys, read and checked at start.

An ``https://`` address (inference, management, metrics) serves TLS, and ``enable_grpc_ssl``
turns it on for both gRPC listeners.  The key and certificate chain come, as in TorchServe, from
a PKCS12 ``keystore`` (``keystore_pass``, default ``changeit``; ``keystore_type`` must be
``PKCS12``), else from ``private_key_file`` and ``certificate_file`` (PEM; the certificate file
may hold the whole chain, server certificate first).  An HTTPS listener with neither gets a
self-signed certificate made at start, as TorchServe does, with a warning; gRPC refuses to start
without key material.  Anything wrong (a wrong password, a key that is not PEM, is encrypted or
does not belong to the certificate) stops the start with a message that says which.

Versions: TLS 1.2 and 1.3 with Python's default ciphers (TorchServe allows TLS 1.2 only, with
two ECDHE-RSA ciphers); plaintext on an HTTPS port is refused by the handshake.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadRequest

log = logging.getLogger("tsf")


@dataclass(frozen=True)
class KeyMaterial:
    """A private key and its certificate chain, as PEM, and where they came from."""

    key_pem: bytes
    chain_pem: bytes
    source: str

    @property
    def fingerprint(self) -> str:
        """The SHA-256 fingerprint of the server certificate (``AB:CD:...``)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        cert = x509.load_pem_x509_certificates(self.chain_pem)[0]
        return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadRequest(f"{key} {path}: cannot be read ({exc.strerror or exc})") from None


def _pem(key: Any, chain: list[Any]) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def _check_pair(key: Any, chain: list[Any], where: str) -> None:
    """The key must belong to the first certificate; an expired one is logged."""
    from cryptography.hazmat.primitives import serialization

    def public(k: Any) -> bytes:
        return k.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)

    if public(key.public_key()) != public(chain[0].public_key()):
        raise BadRequest(f"{where}: the private key does not belong to the certificate (the "
                         "first certificate must be the server's own)")
    now = datetime.datetime.now(datetime.timezone.utc)
    if chain[0].not_valid_after_utc < now:
        log.warning("%s: the certificate expired on %s; clients will refuse it", where,
                    chain[0].not_valid_after_utc.date())


def from_keystore(path: str, password: str, store_type: str) -> KeyMaterial:
    """The first key entry of a PKCS12 keystore and its chain."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    if store_type.strip().upper() not in ("PKCS12", "P12", "PFX"):
        raise BadRequest(f"keystore_type {store_type} is not supported: tsf reads PKCS12 "
                         "keystores (convert a JKS one with keytool -importkeystore "
                         "-deststoretype PKCS12)")
    data = _read(path, "keystore")
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode())
    except ValueError:
        raise BadRequest(f"keystore {path}: cannot be opened: wrong keystore_pass, or not a "
                         "PKCS12 file") from None
    if key is None or cert is None:
        raise BadRequest(f"keystore {path}: no key entry found in the keystore")
    chain = [cert, *extra]
    _check_pair(key, chain, f"keystore {path}")
    return KeyMaterial(*_pem(key, chain), source=f"keystore {path}")


def from_pem_files(key_file: str, cert_file: str) -> KeyMaterial:
    """An unencrypted PEM private key and a PEM certificate chain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key_data, cert_data = _read(key_file, "private_key_file"), _read(cert_file,
                                                                      "certificate_file")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise BadRequest(f"private_key_file {key_file}: the key is encrypted; give an "
                         "unencrypted PEM key (or a PKCS12 keystore with keystore_pass)") from None
    except Exception as exc:  # ValueError, or UnsupportedAlgorithm for an unknown key type
        raise BadRequest(f"private_key_file {key_file}: not a PEM private key "
                         f"({type(exc).__name__})") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise BadRequest(f"certificate_file {cert_file}: not a PEM certificate "
                         "(chain)") from None
    _check_pair(key, chain, f"private_key_file {key_file} and certificate_file {cert_file}")
    return KeyMaterial(key_data, cert_data, source=f"{key_file} and {cert_file}")


def self_signed(hosts: list[str]) -> KeyMaterial:
    """A new key and a self-signed certificate for ``hosts`` (TorchServe's fallback)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tsf self-signed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key, hashes.SHA256()))
    return KeyMaterial(*_pem(key, [cert]), source="a self-signed certificate made at start")


def key_material(config: Any) -> KeyMaterial | None:
    """The configured key material (keystore first, as in TorchServe), or None."""
    if config.keystore:
        return from_keystore(config.keystore, config.keystore_pass, config.keystore_type)
    if config.private_key_file or config.certificate_file:
        if not (config.private_key_file and config.certificate_file):
            raise BadRequest("TLS needs both private_key_file and certificate_file (or a "
                             "keystore)")
        return from_pem_files(config.private_key_file, config.certificate_file)
    return None


class _PemFiles:
    """PEM bytes as files OpenSSL can open: anonymous memory files where Linux has them, else
    owner-only temporary files; gone once the block ends."""

    def __init__(self, *contents: bytes) -> None:
        self.contents = contents
        self._fds: list[int] = []
        self._folder: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> list[str]:
        paths = []
        for index, data in enumerate(self.contents):
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create(f"tsf-tls-{index}", 0)
                self._fds.append(fd)
                os.write(fd, data)
                paths.append(f"/proc/self/fd/{fd}")
            else:  # pragma: no cover - not Linux
                if self._folder is None:
                    self._folder = tempfile.TemporaryDirectory(prefix="tsf-tls-")
                path = Path(self._folder.name) / f"{index}.pem"
                path.touch(mode=0o600)
                path.write_bytes(data)
                paths.append(str(path))
        return paths

    def __exit__(self, *_: Any) -> None:
        for fd in self._fds:
            os.close(fd)
        if self._folder is not None:
            self._folder.cleanup()


def server_context(material: KeyMaterial) -> ssl.SSLContext:
    """An HTTPS server's context: TLS 1.2 or newer, this key and chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _PemFiles(material.chain_pem, material.key_pem) as (chain, key):
        try:
            context.load_cert_chain(chain, key, password=_no_password)
        except ssl.SSLError as exc:
            raise BadRequest(f"TLS from {material.source} cannot be used: {exc}") from None
    return context


def _no_password() -> str:
    raise BadRequest("the private key is encrypted")


def describe(material: KeyMaterial) -> str:
    """A log line's worth: where the key came from and the certificate's fingerprint."""
    return f"{material.source} (certificate SHA-256 fingerprint {material.fingerprint})"
