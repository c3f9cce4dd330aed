"""A redirecting front (``--redirect-port``) before an HTTPS devserver: the proxy set-up
``http://host -> https://host``, with simvuefs's client and the official client.

Only the upgrade on the default ports (80 -> 443, same host) keeps the token, for
``requests`` and so for simvuefs; those tests need to listen on ports 80 and 443 (of a
loopback address of their own) and are skipped where that is not allowed. A front on any
other port is another origin: simvuefs refuses to follow it, in one line, and never sends
the token there. The rules themselves are tested against fake servers in
``tests/unit/test_redirects.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import new_run, settings_for, sha256
from official_util import OfficialClient
from tls_util import PRIVILEGED_HOST, TLSFiles, can_bind_privileged

from simvuefs.backends import check_server
from simvuefs.backends.client import SimvueClient
from simvuefs.config import Certificates, Trust
from simvuefs.devserver import seed
from simvuefs.errors import TransportError
from simvuefs.logs import UsageError
from testbed.devserver import DevServer

RESULTS = seed.ARTIFACTS["results"].content or b""
privileged = pytest.mark.skipif(
    not can_bind_privileged(), reason=f"cannot listen on ports 80 and 443 of {PRIVILEGED_HOST}"
)


def _trusting(files: TLSFiles) -> Certificates:
    return Certificates(server=Trust("server", cafiles=(files.ca,), source="test"))


async def test_a_front_on_another_port_is_another_origin(
    tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers("--seed", "demo", "--large-size", "1MiB", "--redirect-port", "0")
    assert server.redirect_url.startswith("http://127.0.0.1:")
    settings = settings_for(
        server, url=server.redirect_url + "/api", certificates=_trusting(tls_files)
    )
    async with SimvueClient.open(settings) as client:
        with pytest.raises(UsageError) as caught:
            await check_server(client, settings.url)
    message = str(caught.value)
    assert message == (
        f"cannot reach the Simvue server at {server.redirect_url}/api: "
        f"GET {server.redirect_url}/api/version: "
        f"redirected (308) to {server.url}/api/version, "
        "another origin, where simvuefs does not send the token (nor does the official client): "
        f"if that is the Simvue server, use {server.url} in place of {server.redirect_url} in "
        "the server URL"
    )
    assert server.stats()["api_requests"] == {}  # nothing reached the server, token or not


@privileged
async def test_the_usual_upgrade_keeps_the_token(
    tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(
        "--seed",
        "demo",
        "--large-size",
        "1MiB",
        "--host",
        PRIVILEGED_HOST,
        "--port",
        "443",
        "--redirect-port",
        "80",
    )
    assert server.redirect_url == f"http://{PRIVILEGED_HOST}:80"
    settings = settings_for(
        server, url=f"http://{PRIVILEGED_HOST}/api", certificates=_trusting(tls_files)
    )
    run_id = new_run(server, "behind a proxy")
    async with SimvueClient.open(settings) as client:
        assert await check_server(client, settings.url) == "1.3.0"
        (artifact,) = await client.list_artifacts(server.run_ids("demo run")[0], name="results.csv")
        assert await client.read_range(artifact, 0, len(RESULTS)) == RESULTS
        slot = await client.create_artifact(  # a POST: 308 keeps its method and body
            name="posted.txt",
            original_path="/x/posted.txt",
            size=len(RESULTS),
            mime_type="text/plain",
            checksum=sha256(RESULTS),
        )
        await client.attach(run_id, slot.artifact_id, "input")
    assert [a["name"] for a in server.run_artifacts(run_id)] == ["posted.txt"]


@privileged
async def test_a_301_front_serves_reads_and_refuses_posts_in_one_line(
    tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(
        "--seed",
        "demo",
        "--large-size",
        "1MiB",
        "--host",
        PRIVILEGED_HOST,
        "--port",
        "443",
        "--redirect-port",
        "80",
        "--redirect-status",
        "301",
    )
    settings = settings_for(
        server, url=f"http://{PRIVILEGED_HOST}/api", certificates=_trusting(tls_files)
    )
    async with SimvueClient.open(settings) as client:
        assert await check_server(client, settings.url) == "1.3.0"
        with pytest.raises(TransportError) as caught:
            await client.create_artifact(
                name="lost.txt", original_path="/x", size=1, mime_type="text/plain", checksum="c"
            )
    assert str(caught.value).endswith(
        f"POST http://{PRIVILEGED_HOST}/api/artifacts: redirected (301) to "
        f"https://{PRIVILEGED_HOST}/api/artifacts, which would turn it into a GET without its "
        f"body: use https://{PRIVILEGED_HOST} in place of http://{PRIVILEGED_HOST} in the "
        "server URL (or make the server redirect with 307 or 308)"
    )
    assert "POST /api/artifacts" not in server.stats()["api_requests"]


@privileged
def test_the_official_client_behind_the_usual_front(
    tmp_path: Path, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(
        "--seed",
        "demo",
        "--large-size",
        "1MiB",
        "--host",
        PRIVILEGED_HOST,
        "--port",
        "443",
        "--redirect-port",
        "80",
    )

    class Fronted(OfficialClient):
        def env(self) -> dict[str, str]:
            return {**super().env(), "SIMVUE_URL": f"http://{PRIVILEGED_HOST}"}

    official = Fronted(server, tmp_path / "official")
    local = tmp_path / "official" / "data.bin"
    local.write_bytes(b"through the front\n")
    created = official.create_run(
        name="official behind a front", files=[[str(local), "input", None]]
    )
    (record,) = server.run_artifacts(created["id"])
    assert record["checksum"] == sha256(local.read_bytes())
