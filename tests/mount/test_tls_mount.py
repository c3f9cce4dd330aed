"""Mounts of HTTPS devservers with private CAs, through each certificate setting of the
official client: ``SIMVUE_SERVER_CA_CERTIFICATE``, ``SIMVUE_STORAGE_CA_CERTIFICATE``,
``SIMVUE_SERVER_CLIENT_CERTIFICATE``, ``[server.certificates]`` of simvue.toml, and
``SSL_CERT_FILE``; what a mount says without them; and the mount behind a redirecting
front (http -> https on the default ports, where this machine lets tests listen there).

Every mount runs with :func:`tls_util.tls_environment`: no CA or certificate setting but
the ones a test gives (this machine may set ``SSL_CERT_FILE`` for everything).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import new_run, sha256
from tls_util import (
    PRIVILEGED_HOST,
    TLSFiles,
    can_bind_privileged,
    tls_environment,
)

from simvuefs.devserver import seed
from testbed.blobs import serving_blobs
from testbed.devserver import DevServer
from testbed.mounts import is_mounted, mount_command, mounted
from testbed.processes import run_tool

RESULTS = seed.ARTIFACTS["results"].content or b""
SEED = ("--seed", "demo", "--large-size", "1MiB")


def _results(mount_path: Path) -> Path:
    return mount_path / "runs" / "demo run" / "output" / "results.csv"


def test_server_and_storage_cas_from_the_environment(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    with serving_blobs(  # the first HTTPS server's blobs
        tmp_path / "https0" / "data" / "blobs", tls_files.storage
    ) as storage:
        server = https_devservers(*SEED, "--storage-url", storage)
        run_id = new_run(server, "written over https")
        env = tls_environment(
            SIMVUE_SERVER_CA_CERTIFICATE=str(tls_files.ca),
            SIMVUE_STORAGE_CA_CERTIFICATE=str(tls_files.storage_ca),
        )
        with mounted(server, tmp_path, env=env) as mount:
            assert _results(mount.path).read_bytes() == RESULTS  # from the blob server
            written = mount.path / "runs" / "written over https" / "input" / "new.txt"
            written.write_bytes(b"uploaded over TLS\n")  # to the devserver's own storage
            (record,) = server.run_artifacts(run_id)
            assert record["checksum"] == sha256(b"uploaded over TLS\n")


def test_a_missing_storage_ca_fails_reads_with_eio_and_says_which_setting(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    with serving_blobs(  # the first HTTPS server's blobs
        tmp_path / "https0" / "data" / "blobs", tls_files.storage
    ) as storage:
        server = https_devservers(*SEED, "--storage-url", storage)
        env = tls_environment(SIMVUE_SERVER_CA_CERTIFICATE=str(tls_files.ca))
        with mounted(server, tmp_path, env=env) as mount:
            assert _results(mount.path).stat().st_size == len(RESULTS)  # the API is fine
            with pytest.raises(OSError, match="Input/output error") as caught:
                _results(mount.path).read_bytes()
            assert caught.value.errno == errno.EIO
            log = mount.log_tail()
    assert "TLS: the certificate of 127.0.0.1 is not trusted" in log
    assert "set SIMVUE_STORAGE_CA_CERTIFICATE (or storage_ca_cert" in log
    assert server.token not in log


def test_the_config_files_certificates_table_with_a_client_certificate(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(*SEED, client_auth=True)
    with server.config_path.open("a") as config:
        config.write(
            "[server.certificates]\n"
            f'server_ca_cert = "{tls_files.ca}"\n'
            f'client_cert = "{tls_files.client.cert}"\n'
            f'client_key = "{tls_files.client.key}"\n'
        )
    with mounted(server, tmp_path, env=tls_environment()) as mount:
        assert _results(mount.path).read_bytes() == RESULTS


def test_ssl_cert_file_with_a_client_certificate_from_the_environment(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(*SEED, client_auth=True)
    env = tls_environment(
        SSL_CERT_FILE=str(tls_files.ca), SIMVUE_SERVER_CLIENT_CERTIFICATE=str(tls_files.client_pem)
    )
    with mounted(server, tmp_path, env=env) as mount:
        assert _results(mount.path).read_bytes() == RESULTS


def test_without_the_ca_the_mount_fails_in_one_line(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(*SEED)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    argv = mount_command(server.config_path, mountpoint, tmp_path / "mount.log")
    result = run_tool(argv, check=False, env=tls_environment())
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert not is_mounted(mountpoint)
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(
        f"simvuefs: cannot reach the Simvue server at {server.api_url}: "
        f"GET {server.api_url}/version: TLS: the certificate of 127.0.0.1 is not trusted"
    ), stderr
    assert "set SIMVUE_SERVER_CA_CERTIFICATE (or server_ca_cert in [server.certificates]" in stderr
    assert server.token not in stderr


@pytest.mark.skipif(
    not can_bind_privileged(), reason=f"cannot listen on ports 80 and 443 of {PRIVILEGED_HOST}"
)
def test_a_mount_behind_the_usual_https_front(
    tmp_path: Path, tls_files: TLSFiles, https_devservers: Callable[..., DevServer]
) -> None:
    server = https_devservers(
        *SEED, "--host", PRIVILEGED_HOST, "--port", "443", "--redirect-port", "80"
    )
    run_id = new_run(server, "behind a front")
    env = tls_environment(
        SIMVUE_URL=f"http://{PRIVILEGED_HOST}", SIMVUE_SERVER_CA_CERTIFICATE=str(tls_files.ca)
    )
    with mounted(server, tmp_path, env=env) as mount:
        assert _results(mount.path).read_bytes() == RESULTS
        (mount.path / "runs" / "behind a front" / "input" / "new.txt").write_bytes(b"posted\n")
        (record,) = server.run_artifacts(run_id)
        assert record["checksum"] == sha256(b"posted\n")
        log = mount.log_tail()
    assert f"redirects API requests to https://{PRIVILEGED_HOST}" in log
