"""HTTPS for the TLS tests (``tests/server/test_tls.py``, ``test_redirect_front.py``,
``tests/mount/test_tls_mount.py``): private CAs, HTTPS devservers, clean environments.

- :func:`make_tls_files`: the API's CA with a server and a client certificate, and a second
  CA for storage on an origin of its own (``testbed.blobs``).
- :func:`https_devserver`: a :class:`~testbed.devserver.DevServer` serving HTTPS with them
  (not started).
- :func:`tls_environment`: this process's environment without any CA or certificate
  setting (this machine may set ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE``), plus the
  given ones: what a test means to set is all that counts.
- :data:`PRIVILEGED_HOST` and :func:`can_bind_privileged`: ports 80 and 443 on a loopback
  address of their own, for the one proxy set-up that keeps the token (http -> https on
  the default ports), where the machine lets tests bind them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from testbed.certs import LOOPBACK_NAMES, KeyPair, TestPKI
from testbed.devserver import DevServer

PRIVILEGED_HOST = "127.0.15.15"
"""A loopback address (all of 127/8 is local on Linux) for ports 80 and 443 in tests."""
TLS_VARIABLES = (
    "SIMVUE_SERVER_CA_CERTIFICATE",
    "SIMVUE_STORAGE_CA_CERTIFICATE",
    "SIMVUE_SERVER_CLIENT_CERTIFICATE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@dataclass(frozen=True)
class TLSFiles:
    """Certificates for one test session."""

    ca: Path
    """The API's CA (what ``SIMVUE_SERVER_CA_CERTIFICATE`` names)."""
    server: KeyPair
    """Signed by *ca*, for localhost, 127.0.0.1, ::1 and :data:`PRIVILEGED_HOST`."""
    client: KeyPair
    """A client certificate signed by *ca*."""
    client_pem: Path
    """*client*'s certificate and key in one file."""
    storage_ca: Path
    """Another CA (what ``SIMVUE_STORAGE_CA_CERTIFICATE`` names)."""
    storage: KeyPair
    """Signed by *storage_ca*, for the same names."""


def make_tls_files(directory: Path) -> TLSFiles:
    """Make two CAs and their certificates in *directory*."""
    names = (*LOOPBACK_NAMES, PRIVILEGED_HOST)
    api = TestPKI.create(directory / "api", "simvuefs test API CA")
    storage = TestPKI.create(directory / "storage", "simvuefs test storage CA")
    client = api.issue("client", client=True)
    client_pem = directory / "client-with-key.pem"
    client_pem.write_bytes(client.cert.read_bytes() + client.key.read_bytes())
    return TLSFiles(
        ca=api.ca_file,
        server=api.issue("server", names),
        client=client,
        client_pem=client_pem,
        storage_ca=storage.ca_file,
        storage=storage.issue("storage", names),
    )


def https_devserver(
    workdir: Path, files: TLSFiles, *extra: str, client_auth: bool = False
) -> DevServer:
    """A devserver (not started) serving HTTPS with *files*, started with *extra*; with
    *client_auth* it requires client certificates of *files*' CA."""
    args = ["--tls-cert", str(files.server.cert), "--tls-key", str(files.server.key)]
    if client_auth:
        args += ["--tls-client-ca", str(files.ca)]
    client = (files.client.cert, files.client.key) if client_auth else None
    return DevServer(workdir, [*args, *extra], ca_file=files.ca, client_cert=client)


def tls_environment(**variables: str) -> dict[str, str]:
    """This process's environment without :data:`TLS_VARIABLES`, plus *variables*."""
    env = {key: value for key, value in os.environ.items() if key not in TLS_VARIABLES}
    env.update(variables)
    return env


def can_bind_privileged() -> bool:
    """True when this process may listen on ports 80 and 443 of :data:`PRIVILEGED_HOST`."""
    for port in (80, 443):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((PRIVILEGED_HOST, port))
            except OSError:
                return False
    return True
