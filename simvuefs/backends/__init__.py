"""Where runs and artifacts come from: a Simvue server or the official client's offline cache.

``protocol`` is the contract the layers above are written against (:class:`SimvueBackend`,
re-exported here); ``client`` (over ``transport``, ``redirects`` and ``tls``, the only users
of httpx) and ``offline`` (over ``offline_cache`` and ``offline_drafts``) satisfy it.
:func:`open_backend` opens the one a mount shows; a server is checked (:func:`check_server`)
before anything is served from it, so a wrong URL or token stops the mount with one line
instead of failing later.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from simvuefs.backends.client import SimvueClient
from simvuefs.backends.offline import OfflineClient
from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import Settings
from simvuefs.errors import AuthError, ProtocolError, StatusError, TransportError
from simvuefs.logs import UsageError

__all__ = ["SimvueBackend", "check_server", "open_backend"]

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_backend(settings: Settings, *, offline: bool) -> AsyncIterator[SimvueBackend]:
    """Open what the mount shows: the offline cache, or the server (checked first)."""
    if offline:
        async with OfflineClient.open(settings) as cache:
            log.info("serving the offline cache %s", settings.offline_directory)
            yield cache
        return
    async with SimvueClient.open(settings) as client:
        version = await check_server(client, settings.url)
        log.info("server %s answers (version %s)", settings.url, version)
        yield client
        log.debug("client: %s", client.statistics())


async def check_server(client: SimvueClient, url: str) -> str:
    """Return the server's version, or raise UsageError with one line saying what is wrong."""
    try:
        return await client.server_version()
    except AuthError as exc:
        raise UsageError(
            f"the Simvue server at {url} rejected the token (HTTP {exc.status}): "
            "check SIMVUE_TOKEN or the token in simvue.toml"
        ) from None
    except TransportError as exc:
        raise UsageError(f"cannot reach the Simvue server at {url}: {exc}") from None
    except (StatusError, ProtocolError) as exc:
        raise UsageError(f"{url} does not look like a Simvue server: {exc}") from None
