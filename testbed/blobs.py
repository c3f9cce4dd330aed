"""A static HTTPS file server in a thread: storage on an origin (and CA) of its own.

A devserver started with ``--storage-url URL`` hands out download URLs ``URL/<sha256>``;
:func:`serving_blobs` serves its ``blobs/`` directory there, as nginx or an object store in
front of a real server's storage would, over TLS with a certificate of the caller's
(typically from another CA than the API's, see :mod:`testbed.certs`)::

    with serving_blobs(server.data_dir / "blobs", storage_pair) as storage_url:
        ...

It answers GET and HEAD with the whole file (no Range: readers must cope with a 200), and
stops, its thread joined, when the block ends. Nothing here imports simvuefs.
"""

from __future__ import annotations

import functools
import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testbed.certs import KeyPair

STOP_TIMEOUT = 10.0


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A file handler that writes no access log (stderr belongs to pytest)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving_blobs(directory: Path, pair: KeyPair, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve *directory* over HTTPS with *pair* on a free port of *host*; yield its URL."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="blob server", daemon=True)
    thread.start()
    try:
        yield f"https://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise AssertionError(f"the blob server did not stop within {STOP_TIMEOUT} s")
