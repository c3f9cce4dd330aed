"""Start the devserver: prepare the data directory, bind, announce, serve until signalled.

The socket is bound here (port 0 picks a free port) and handed to uvicorn, so the URL is
known before serving. The line ``simvuefs devserver listening on URL`` is printed (and
flushed) only once uvicorn accepts requests; it is the only thing written to stdout, but for
``--redirect-port``, whose line ``simvuefs devserver redirecting from URL`` comes first.
SIGINT and SIGTERM stop the server cleanly with exit status 0.

With ``--tls-cert`` the server speaks HTTPS only (the URL says ``https://``), API and
storage alike; ``--tls-client-ca`` makes it require client certificates signed by that CA.
``--redirect-port`` adds a plain-HTTP listener on the same host that answers every request
with a redirect to the same path on the server's URL (``front.py``), as a proxy in front of
a Simvue server does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from simvuefs.devserver.app import build_app
from simvuefs.devserver.arguments import REALISTIC_MAX_UPLOAD
from simvuefs.devserver.auth import load_or_create_secret, mint_token
from simvuefs.devserver.faults import FaultError, Faults, parse_assignment
from simvuefs.devserver.front import redirector
from simvuefs.devserver.seed import SEEDS
from simvuefs.devserver.state import USER_NAME, ServerState
from simvuefs.devserver.storage import DroppedConnection
from simvuefs.devserver.store import Store
from simvuefs.logs import UsageError, setup_logging

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 2
"""How long a stop waits for open requests (a stalled download, say) before cancelling them."""


class _Server(uvicorn.Server):
    """uvicorn's server that announces itself once started, and does not re-raise the stop
    signal after shutdown (so a signalled stop exits with status 0)."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"simvuefs devserver listening on {self.url}", flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Front(uvicorn.Server):
    """The redirecting front: stopped by the main server, never handling signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(
    server: _Server, sock: socket.socket, front: _Front | None, front_sock: socket.socket | None
) -> None:
    """Serve *server* on *sock* (and *front* on *front_sock*) until *server* stops."""
    if front is None or front_sock is None:
        await server.serve(sockets=[sock])
        return
    front_task = asyncio.create_task(front.serve(sockets=[front_sock]))
    try:
        await server.serve(sockets=[sock])
    finally:
        front.should_exit = True
        await front_task


class _HideDroppedConnections(logging.Filter):
    """uvicorn logs an app exception as an error; a fault-injected drop is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def _prepare_data_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"data directory {str(path)!r} is not usable: {exc.strerror}") from None
    return path


def _faults(assignments: list[str]) -> Faults:
    faults = Faults()
    try:
        faults.update(dict(parse_assignment(text) for text in assignments))
    except FaultError as exc:
        raise UsageError(str(exc), exitcode=2) from None
    return faults


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _public_url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """The uvicorn options of ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` (none
    without ``--tls-cert``); UsageError when the files do not load."""
    if args.tls_cert is None:
        if args.tls_key is not None or args.tls_client_ca is not None:
            raise UsageError("--tls-key and --tls-client-ca need --tls-cert", exitcode=2)
        return {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    files = " and ".join(str(path) for path in (args.tls_cert, args.tls_key) if path)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
        files = str(args.tls_client_ca)
        if args.tls_client_ca is not None:
            context.load_verify_locations(args.tls_client_ca)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise UsageError(f"cannot load the TLS files {files}: {reason}") from None
    options: dict[str, Any] = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
    if args.tls_client_ca is not None:
        options.update(ssl_ca_certs=args.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def _front(
    args: argparse.Namespace, target: str
) -> tuple[_Front, socket.socket] | tuple[None, None]:
    """The redirecting front of ``--redirect-port`` (announced here), or nothing."""
    if args.redirect_port is None:
        return None, None
    sock = _bind(args.host, args.redirect_port)
    config = uvicorn.Config(
        redirector(target, args.redirect_status),
        log_config=None,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    print(f"simvuefs devserver redirecting from {_public_url(sock)}", flush=True)
    return _Front(config), sock


def write_config(path: Path, url: str, token: str) -> None:
    """Write a ``simvue.toml`` (mode 0600: it holds a token) read by simvue and simvuefs."""
    text = (
        "# Written by simvuefs devserver.\n"
        f"[server]\nurl = {json.dumps(url)}\ntoken = {json.dumps(token)}\n"
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror}") from None


def _seed(store: Store, seed: str, large_size: int) -> None:
    began = time.perf_counter()
    try:
        SEEDS[seed](store, large_size)
    except OSError as exc:
        raise UsageError(f"cannot seed the {seed} data: {exc}") from None
    log.info("seeded %s data in %.2f s", seed, time.perf_counter() - began)


def run(args: argparse.Namespace) -> int:
    """Run the devserver described by *args* until SIGINT/SIGTERM; return the exit status."""
    setup_logging(args.log_level)
    logging.getLogger("uvicorn.error").addFilter(_HideDroppedConnections())
    faults = _faults(args.fault)
    data_dir = _prepare_data_dir(args.data)
    try:
        secret = load_or_create_secret(data_dir / "secret")
        store = Store(data_dir)
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise UsageError(f"cannot open the data directory {str(data_dir)!r}: {exc}") from None
    try:
        if args.seed is not None and store.count_runs() == 0:
            _seed(store, args.seed, args.large_size)
        tls = _tls_options(args)
        sock = _bind(args.host, args.port)
        url = _public_url(sock, "https" if tls else "http")
        if args.write_config is not None:
            write_config(args.write_config, url, mint_token(secret, USER_NAME))
        state = ServerState(
            store=store,
            secret=secret,
            upload_style=args.upload_style,
            url_expiry=args.url_expiry,
            storage_url=args.storage_url.rstrip("/"),
            dedup=not args.no_dedup,
            max_upload_size=args.max_upload_size or (REALISTIC_MAX_UPLOAD if args.realistic else 0),
            realistic=args.realistic,
            faults=faults,
        )
        config = uvicorn.Config(
            build_app(state),
            log_config=None,
            log_level=args.log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            **tls,
        )
        front, front_sock = _front(args, url)
        asyncio.run(_serve(_Server(config, url), sock, front, front_sock))
    finally:
        store.close()
    sys.stdout.flush()
    return 0
