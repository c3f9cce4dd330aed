"""Certificate settings (``config.Certificates``) resolved as the official client resolves
them, and the TLS contexts and messages built from them (``backends/tls.py``).

The parity test runs the official client's own model (``CertificateSpecifications``) on
the same environment and table in a subprocess: what it reads as a CA file, true or false,
or refuses, we must read alike. The HTTPS behaviour itself (certificates checked, the
one-line messages of real handshakes) is in ``tests/server/test_tls.py``.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from control_util import make_jwt

from simvuefs.backends.tls import explain, server_origins, ssl_context
from simvuefs.config import Certificates, Trust, resolve_server
from simvuefs.errors import ConfigError

TOKEN = make_jwt()
SERVER = {"SIMVUE_URL": "https://simvue.example", "SIMVUE_TOKEN": TOKEN}


def _toml_value(value: Any) -> str:
    return json.dumps(value)  # TOML strings and booleans are written like JSON's


def resolve(
    directory: Path, env: dict[str, str], table: dict[str, Any] | None = None, profile: str = ""
) -> Certificates:
    """Resolve with *env* and a simvue.toml in *directory* holding *table* as certificates."""
    section = f"profiles.{profile}" if profile else "server"
    text = f'[{section}]\nurl = "https://simvue.example"\ntoken = "{TOKEN}"\n'
    if table is not None:
        text += f"[{section}.certificates]\n"
        text += "".join(f"{key} = {_toml_value(value)}\n" for key, value in table.items())
    (directory / "simvue.toml").write_text(text)
    return resolve_server(
        env=env, cwd=directory, home=directory, profile=profile or None
    ).certificates


def _ours(directory: Path, env: dict[str, str], table: dict[str, Any]) -> dict[str, Any]:
    try:
        found = resolve(directory, {**SERVER, **env}, table)
    except ConfigError:
        return {"error": True}

    def trust(value: Trust) -> bool | str:
        if not value.verify:
            return False
        return str(value.cafiles[0]) if value.cafiles else True

    client = found.client_cert
    return {
        "server": trust(found.server),
        "storage": trust(found.storage),
        "client_cert": None if client is None else str(client),
    }


OFFICIAL = """
import json, os, sys
import pydantic
from simvue.config.parameters import CertificateSpecifications
results = []
for env, table in json.loads(sys.argv[1]):
    for name in ("SIMVUE_SERVER_CA_CERTIFICATE", "SIMVUE_STORAGE_CA_CERTIFICATE",
                 "SIMVUE_SERVER_CLIENT_CERTIFICATE"):
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        spec = CertificateSpecifications(**table)
    except pydantic.ValidationError:
        results.append({"error": True})
        continue
    def trust(value):
        return value if isinstance(value, bool) else str(os.path.abspath(value))
    results.append({
        "server": trust(spec.server_ca_cert),
        "storage": trust(spec.storage_ca_cert),
        "client_cert": None if spec.client_cert is None else os.path.abspath(spec.client_cert),
    })
print(json.dumps(results))
"""

PARITY_CASES: list[tuple[dict[str, str], dict[str, Any]]] = [
    ({}, {}),
    ({"SIMVUE_SERVER_CA_CERTIFICATE": "ca.pem"}, {}),
    ({"SIMVUE_SERVER_CA_CERTIFICATE": "false"}, {}),
    ({"SIMVUE_SERVER_CA_CERTIFICATE": "No"}, {}),
    ({"SIMVUE_SERVER_CA_CERTIFICATE": "1"}, {}),
    ({"SIMVUE_SERVER_CA_CERTIFICATE": "yes"}, {}),  # a file called "yes" exists: a file
    ({"SIMVUE_SERVER_CA_CERTIFICATE": "missing.pem"}, {}),
    ({"SIMVUE_SERVER_CA_CERTIFICATE": ""}, {}),
    ({"SIMVUE_STORAGE_CA_CERTIFICATE": "off"}, {"server_ca_cert": "ca.pem"}),
    ({}, {"server_ca_cert": False, "storage_ca_cert": "ca.pem"}),
    ({}, {"server_ca_cert": True}),
    ({"SIMVUE_SERVER_CA_CERTIFICATE": "ca.pem"}, {"server_ca_cert": False}),
    ({}, {"server_ca_cert": "missing.pem"}),
    ({}, {"client_cert": "client.pem"}),
    ({"SIMVUE_SERVER_CLIENT_CERTIFICATE": "client.pem"}, {}),
    ({"SIMVUE_SERVER_CLIENT_CERTIFICATE": ""}, {}),  # empty: not set, as in the client
    ({"SIMVUE_SERVER_CLIENT_CERTIFICATE": "missing.pem"}, {}),
    ({}, {"server_ca_certificate": "ca.pem"}),  # unknown key
]


def test_settings_are_read_as_the_official_client_reads_them(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "yes"):
        (tmp_path / name).write_text("not parsed while resolving\n")
    completed = subprocess.run(
        [sys.executable, "-c", OFFICIAL, json.dumps(PARITY_CASES)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    theirs = json.loads(completed.stdout.splitlines()[-1])
    ours = [_ours(tmp_path, env, table) for env, table in PARITY_CASES]
    for case, mine, official in zip(PARITY_CASES, ours, theirs, strict=True):
        assert mine == official, case


def test_a_profile_has_its_own_certificates_table(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    found = resolve(tmp_path, {}, {"server_ca_cert": "ca.pem"}, profile="dev")
    assert found.server.cafiles == (tmp_path / "ca.pem",)
    assert (
        found.server.source
        == f"server_ca_cert in [profiles.dev.certificates] of {tmp_path / 'simvue.toml'}"
    )


def test_true_means_every_bundle_the_environment_names(tmp_path: Path) -> None:
    bundle, ssl_file, certs = tmp_path / "bundle.pem", tmp_path / "ssl.pem", tmp_path / "certs"
    bundle.write_text("x")
    ssl_file.write_text("x")
    certs.mkdir()
    env = {
        "REQUESTS_CA_BUNDLE": str(bundle),
        "SSL_CERT_FILE": str(ssl_file),
        "SSL_CERT_DIR": "certs",
    }
    found = resolve(tmp_path, env, {"storage_ca_cert": True})
    for trust in (found.server, found.storage):
        assert trust.verify
        assert trust.cafiles == (bundle, ssl_file)
        assert trust.capaths == (certs,)
        assert (
            trust.source == "environment variables REQUESTS_CA_BUNDLE, SSL_CERT_FILE, SSL_CERT_DIR"
        )
    assert resolve(tmp_path, {}).server == Trust("server")  # certifi's


def test_a_bundle_variable_naming_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="environment variable SSL_CERT_FILE: .*nope.pem is neither"
    ):
        resolve(tmp_path, {"SSL_CERT_FILE": "nope.pem"})


def test_an_explicit_ca_replaces_the_bundles(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    explicit = {
        "SSL_CERT_FILE": "/nonexistent",
        "SIMVUE_SERVER_CA_CERTIFICATE": "~/ca.pem",  # ~: the home directory
        "SIMVUE_STORAGE_CA_CERTIFICATE": "false",
    }
    found = resolve(tmp_path, explicit)
    assert found.server.cafiles == (tmp_path / "ca.pem",)
    assert not found.storage.verify
    del explicit["SIMVUE_STORAGE_CA_CERTIFICATE"]  # storage: true, so the bundles count
    with pytest.raises(ConfigError, match="SSL_CERT_FILE"):
        resolve(tmp_path, explicit)


def test_client_key_needs_a_client_cert(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("x")
    with pytest.raises(
        ConfigError, match=r"client_key in \[server.certificates\] .* needs a client_cert"
    ):
        resolve(tmp_path, {}, {"client_key": "key.pem"})


def test_messages_name_the_setting_and_never_echo_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(tmp_path, {"SIMVUE_SERVER_CA_CERTIFICATE": "maybe"})
    assert str(caught.value) == (
        "environment variable SIMVUE_SERVER_CA_CERTIFICATE: 'maybe' is neither a file nor "
        "true/false"
    )
    with pytest.raises(ConfigError, match=r"unknown key 'verify' in \[server.certificates\]"):
        resolve(tmp_path, {}, {"verify": False})


def test_unloadable_files_are_config_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    bad_ca = Trust(
        "server", cafiles=(junk,), source="environment variable SIMVUE_SERVER_CA_CERTIFICATE"
    )
    with pytest.raises(
        ConfigError, match=f"SIMVUE_SERVER_CA_CERTIFICATE: cannot load CA certificates from {junk}"
    ):
        ssl_context(bad_ca, Certificates())
    with pytest.raises(ConfigError, match=f"cannot load the client certificate {junk}"):
        ssl_context(Trust("server"), Certificates(client_cert=junk))


def test_contexts_verify_as_told() -> None:
    checked = ssl_context(Trust("server"), Certificates())
    assert checked.verify_mode == ssl.CERT_REQUIRED
    assert checked.check_hostname
    assert checked.get_ca_certs()  # certifi's bundle
    unchecked = ssl_context(Trust("storage", verify=False), Certificates())
    assert unchecked.verify_mode == ssl.CERT_NONE
    assert not unchecked.check_hostname


def test_the_server_origin_includes_its_https_upgrade() -> None:
    assert server_origins("http://h/api") == {("http", "h", 80), ("https", "h", 443)}
    assert server_origins("http://h:8080/api") == {("http", "h", 8080)}
    assert server_origins("https://h/api") == {("https", "h", 443)}


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    error.verify_code = code
    error.verify_message = message
    return error


def test_verification_failures_say_which_setting_fixes_them(tmp_path: Path) -> None:
    url = httpx.URL("https://files.example:9000/blob")
    storage = Trust("storage")
    message = explain(
        _verify_error(20, "unable to get local issuer certificate"), url, storage, Certificates()
    )
    assert message == (
        "TLS: the certificate of files.example is not trusted (unable to get local issuer "
        "certificate; checked against certifi's CA bundle): for a private CA, set "
        "SIMVUE_STORAGE_CA_CERTIFICATE (or storage_ca_cert in [server.certificates] of "
        "simvue.toml) to its certificate file"
    )
    mismatch = explain(_verify_error(62, "Hostname mismatch"), url, storage, Certificates())
    assert mismatch.startswith("TLS: the certificate of files.example is not valid for that name")


def test_refused_client_certificates_are_named() -> None:
    url = httpx.URL("https://simvue.example/api/version")
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert "set SIMVUE_SERVER_CLIENT_CERTIFICATE" in explain(alert, url, Trust(), Certificates())
    given = Certificates(client_cert=Path("/me.pem"))
    assert "refused the client certificate /me.pem" in explain(alert, url, Trust(), given)
