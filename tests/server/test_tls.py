"""HTTPS devservers with private CAs: simvuefs's client with each certificate setting, the
one-line messages of failed handshakes, and the official client with its own settings.

Storage on an origin of its own (``--storage-url`` to ``testbed.blobs``, with a second CA)
shows that ``SIMVUE_STORAGE_CA_CERTIFICATE`` applies to storage and
``SIMVUE_SERVER_CA_CERTIFICATE`` to the API. Mounts over HTTPS are in
``tests/mount/test_tls_mount.py``; how settings are read, in
``tests/unit/test_certificates.py``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import new_run, settings_for, sha256
from official_util import OfficialClient
from tls_util import TLSFiles

from simvuefs.backends import check_server
from simvuefs.backends.client import SimvueClient
from simvuefs.config import Certificates, Settings, Trust, resolve_server
from simvuefs.devserver import seed
from simvuefs.errors import TransportError
from simvuefs.logs import UsageError
from testbed.blobs import serving_blobs
from testbed.devserver import DevServer
from testbed.processes import run_tool

SEED = ("--seed", "demo", "--large-size", "1MiB")
RESULTS = seed.ARTIFACTS["results"].content or b""


def _trusting(server: Path, storage: Path | None = None, **certificates: Any) -> Certificates:
    return Certificates(
        server=Trust("server", cafiles=(server,), source="test"),
        storage=Trust("storage", cafiles=(storage,), source="test")
        if storage
        else Trust("storage"),
        **certificates,
    )


async def _results(client: SimvueClient, server: DevServer) -> bytes:
    (artifact,) = await client.list_artifacts(server.run_ids("demo run")[0], name="results.csv")
    return await client.read_range(artifact, 0, len(RESULTS))


async def test_the_servers_ca_from_the_environment_serves_reads_and_uploads(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(*SEED)
    assert server.url.startswith("https://127.0.0.1:")
    env = {**server.env(), "SIMVUE_SERVER_CA_CERTIFICATE": str(tls_files.ca)}
    del env["SIMVUE_STORAGE_CA_CERTIFICATE"]  # storage is served by the API's own origin
    resolved = resolve_server(env=env, cwd=tmp_path, home=tmp_path)
    assert resolved.certificates.server.cafiles == (tls_files.ca,)
    settings = Settings.from_server(resolved, mountpoint=tmp_path / "mnt", request_timeout=10)
    run_id = new_run(server, "over https")
    local = tmp_path / "upload.bin"
    local.write_bytes(b"sent over TLS\n")
    async with SimvueClient.open(settings) as client:
        assert await check_server(client, settings.url) == "1.3.0"
        assert await _results(client, server) == RESULTS
        opened = client.statistics().connections_opened
        assert await _results(client, server) == RESULTS
        # A block filled through TLS (no socket descriptor to read from: receive).
        (artifact,) = await client.list_artifacts(server.run_ids("demo run")[0], name="results.csv")
        block = bytearray(len(RESULTS) + 10)
        async with client.open_range(artifact, 0) as body:
            assert await body.readinto(memoryview(block)) == len(RESULTS)
        assert bytes(block[: len(RESULTS)]) == RESULTS
        # The API's and the storage's TLS connections were both kept (storagepool.py).
        assert client.statistics().connections_opened == opened
        slot = await client.create_artifact(
            name="upload.bin",
            original_path="/x/upload.bin",
            size=14,
            mime_type="application/octet-stream",
            checksum=sha256(local.read_bytes()),
        )
        await client.upload_content(slot, local, 14, "upload.bin")
        await client.mark_uploaded(slot.artifact_id)
        await client.attach(run_id, slot.artifact_id, "input")
    (record,) = server.run_artifacts(run_id)
    assert (record["name"], record["checksum"]) == ("upload.bin", sha256(b"sent over TLS\n"))


async def test_an_untrusted_certificate_fails_at_once_in_one_line(
    tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers()
    settings = settings_for(server, request_timeout=20)  # certifi's CAs only
    async with SimvueClient.open(settings) as client:
        with pytest.raises(UsageError) as caught:
            await check_server(client, settings.url)
    message = str(caught.value)
    assert message.startswith(
        f"cannot reach the Simvue server at {server.api_url}: GET {server.api_url}/version: "
        "TLS: the certificate of 127.0.0.1 is not trusted (unable to get local issuer "
        "certificate; checked against certifi's CA bundle): for a private CA, set "
        "SIMVUE_SERVER_CA_CERTIFICATE (or server_ca_cert in [server.certificates] of "
        "simvue.toml) to its certificate file"
    ), message
    assert "\n" not in message
    assert server.token not in message
    assert client.statistics().requests == 1  # a certificate is not retried
    assert "GET /api/version" not in server.stats()["api_requests"]


async def test_unchecked_certificates_work_with_a_warning(
    tmp_path: Path,
    tls_files: TLSFiles,
    https_devservers: Callable[..., DevServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = https_devservers()
    env = {"SIMVUE_URL": server.url, "SIMVUE_TOKEN": server.token}
    resolved = resolve_server(
        env={**env, "SIMVUE_SERVER_CA_CERTIFICATE": "false"}, cwd=tmp_path, home=tmp_path
    )
    settings = Settings.from_server(resolved, mountpoint=tmp_path / "mnt")
    caplog.set_level(logging.WARNING, "simvuefs.backends.tls")
    async with SimvueClient.open(settings) as client:
        assert await check_server(client, settings.url) == "1.3.0"
    assert [r.getMessage() for r in caplog.records] == [
        "TLS certificates of API URLs are not checked "
        "(environment variable SIMVUE_SERVER_CA_CERTIFICATE)"
    ]


async def test_storage_on_its_own_origin_is_checked_with_the_storage_ca(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    blobs = tmp_path / "https0" / "data" / "blobs"  # the first HTTPS server's data directory
    with serving_blobs(blobs, tls_files.storage) as storage_url:
        server = https_devservers(*SEED, "--storage-url", storage_url)
        only_api = settings_for(server, certificates=_trusting(tls_files.ca), request_timeout=10)
        async with SimvueClient.open(only_api) as client:
            with pytest.raises(TransportError) as caught:
                await _results(client, server)
        message = str(caught.value)
        assert message.startswith(f"GET {storage_url}/{sha256(RESULTS)}: TLS: the certificate")
        assert "SIMVUE_STORAGE_CA_CERTIFICATE (or storage_ca_cert" in message
        assert "?" not in message  # the signed URL's query is a secret

        both = _trusting(tls_files.ca, tls_files.storage_ca)
        async with SimvueClient.open(settings_for(server, certificates=both)) as client:
            assert await _results(client, server) == RESULTS


async def test_a_server_that_wants_a_client_certificate(
    tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(*SEED, client_auth=True)
    without = settings_for(server, certificates=_trusting(tls_files.ca), request_timeout=5)
    async with SimvueClient.open(without) as client:
        with pytest.raises(UsageError) as caught:
            await check_server(client, without.url)
    assert "\n" not in str(caught.value)
    with_pem = _trusting(tls_files.ca, client_cert=tls_files.client_pem)
    with_pair = _trusting(
        tls_files.ca, client_cert=tls_files.client.cert, client_key=tls_files.client.key
    )
    for certificates in (with_pem, with_pair):
        async with SimvueClient.open(settings_for(server, certificates=certificates)) as client:
            assert await check_server(client, server.api_url) == "1.3.0"
            assert await _results(client, server) == RESULTS  # storage asks for it too


def test_the_official_client_works_with_its_own_settings(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers()
    assert "SIMVUE_SERVER_CA_CERTIFICATE" in server.env()
    official = OfficialClient(server, tmp_path / "official")
    local = tmp_path / "official" / "data.bin"
    local.write_bytes(b"the official client over TLS\n")
    created = official.create_run(name="official over https", files=[[str(local), "input", None]])
    result = official.call(
        "download",
        run_id=created["id"],
        names=["data.bin"],
        output_dir=str(tmp_path / "official" / "out"),
    )
    assert result["single"]["data.bin"] == {"data.bin": sha256(local.read_bytes())}


@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        (["--tls-key", "KEY"], 2, "simvuefs: --tls-key and --tls-client-ca need --tls-cert"),
        (["--tls-cert", "CERT", "--tls-key", "CLIENT_KEY"], 1, "KEY_VALUES_MISMATCH"),
        (["--tls-cert", "CERT", "--tls-key", "KEY", "--tls-client-ca", "KEY"], 1, "NO_CERTIFICATE"),
    ],
)
def test_the_devserver_checks_its_tls_files(
    tmp_path: Path, tls_files: TLSFiles, options: list[str], status: int, message: str
) -> None:
    files = {
        "CERT": tls_files.server.cert,
        "KEY": tls_files.server.key,
        "CLIENT_KEY": tls_files.client.key,
    }
    argv = [sys.executable, "-m", "simvuefs", "devserver", "--data", str(tmp_path / "data")]
    result = run_tool([*argv, *(str(files.get(o, o)) for o in options)], check=False)
    assert result.returncode == status
    assert message in result.stderr.decode()
    assert result.stderr.decode().count("\n") == 1
    assert result.stdout == b""
