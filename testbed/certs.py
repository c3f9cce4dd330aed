"""A private certificate authority for HTTPS devservers, made with the ``openssl`` command.

::

    pki = TestPKI.create(workdir)            # workdir/ca.pem, ca.key
    server = pki.issue("server")             # server.pem + server.key for localhost, 127.0.0.1, ::1
    client = pki.issue("client", client=True)
    DevServer(workdir, ["--tls-cert", str(server.cert), "--tls-key", str(server.key)],
              ca_file=pki.ca_file)

Certificates are EC P-256, valid for two days, with the extensions a strict verifier wants
(basic constraints, key usage, subject and authority key ids). Keys are unencrypted.
Nothing here imports simvuefs (see :mod:`testbed`); ``openssl`` (3.0 or later, for
``req -CA``) is a system package (``scripts/install``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from testbed.processes import run_tool

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""The names a devserver certificate is valid for unless told otherwise."""
VALID_DAYS = "2"
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc")


def openssl() -> str:
    """Return the openssl binary; AssertionError when it is not installed."""
    found = shutil.which("openssl")
    if found is None:
        raise AssertionError("the openssl command is not installed (package openssl)")
    return found


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class TestPKI:
    """A certificate authority in *directory*: ``ca.pem`` (what clients trust), ``ca.key``."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def create(cls, directory: Path, name: str = "simvuefs test CA") -> TestPKI:
        """Make a new CA in *directory* (created if missing)."""
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory)
        run_tool(
            [
                openssl(),
                "req",
                "-x509",
                *_EC_KEY,
                "-keyout",
                directory / "ca.key",
                "-out",
                pki.ca_file,
                "-days",
                VALID_DAYS,
                "-subj",
                f"/CN={name}",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]
        )
        return pki

    def issue(
        self, stem: str, names: tuple[str, ...] = LOOPBACK_NAMES, *, client: bool = False
    ) -> KeyPair:
        """Issue ``<stem>.pem`` and ``<stem>.key`` signed by this CA: a server certificate
        for the host *names* (DNS names or IP addresses), or with *client* a client
        certificate whose subject is *stem*."""
        pair = KeyPair(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        usage = "clientAuth" if client else "serverAuth"
        extensions = ["basicConstraints=critical,CA:FALSE", f"extendedKeyUsage={usage}"]
        if not client:
            sans = ",".join(_san(name) for name in names)
            extensions.append(f"subjectAltName={sans}")
        run_tool(
            [
                openssl(),
                "req",
                "-x509",
                *_EC_KEY,
                "-keyout",
                pair.key,
                "-out",
                pair.cert,
                "-days",
                VALID_DAYS,
                "-subj",
                f"/CN={stem if client else names[0]}",
                "-CA",
                self.ca_file,
                "-CAkey",
                self.directory / "ca.key",
                *(part for extension in extensions for part in ("-addext", extension)),
            ]
        )
        return pair


def _san(name: str) -> str:
    """``IP:127.0.0.1`` for an address, ``DNS:localhost`` for a name."""
    is_address = name.replace(".", "").isdigit() or ":" in name
    return f"IP:{name}" if is_address else f"DNS:{name}"
