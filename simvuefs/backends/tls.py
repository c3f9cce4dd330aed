"""The network under the ``httpx.AsyncClient``: TLS as the official client configures it,
proxies from the environment, and TLS failures explained in one line.

Invariants:

- Requests to the server's origin (the API URL's scheme, host and port, and for an
  ``http://host`` API on port 80 its upgrade ``https://host``) are verified with
  ``certificates.server`` (the client's ``server_ca_cert``); every other URL (storage) with
  ``certificates.storage`` (``storage_ca_cert``). The official client applies the storage
  setting to every storage URL, also one served by the API's own origin; simvuefs trusts the
  server's certificate there, which is the same certificate.
- The client certificate, when set, is offered to every server that asks for one.
- GETs without a body and without a proxy (storage range GETs, API listings) go to
  :class:`~simvuefs.backends.storagepool.StoragePool` (keep-alive sockets, bodies read with
  one copy) with the same SSL context the origin would get here; everything else to
  httpx's transports. *on_connect* is called for every
  connection either opens.
- Proxies come from the environment as ``requests`` takes them (urllib's parsing of the
  ``*_proxy`` variables, read when the client opens, and of ``no_proxy``); httpx's own
  environment handling is off (``trust_env=False``) so that no request bypasses this
  transport.
- A failed certificate check, or a TLS handshake the server refuses, becomes
  :class:`TLSFailure` (not retried: it fails the same way every time) whose message names
  the host, the reason and the setting that fixes it. Connection losses during a handshake
  (``SSLEOFError``, ...) stay the retryable errors they were.
"""

from __future__ import annotations

import logging
import ssl
import urllib.request
from collections.abc import Callable
from typing import Any

import httpx

from simvuefs.backends.storagepool import StoragePool, pooled
from simvuefs.config import Certificates, Settings, Trust
from simvuefs.errors import ConfigError

log = logging.getLogger(__name__)

Origin = tuple[str, str, int | None]
_DEFAULT_PORTS = {"http": 80, "https": 443}
# OpenSSL verify codes of a certificate that is fine but names other hosts.
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
# TLS alerts with which a server refuses a client certificate, or the lack of one.
_CLIENT_CERT_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "ACCESS_DENIED",
)
_PROXY_SCHEMES = ("http", "https", "all")
# ssl.SSLError subclasses that mean the connection went away, not that TLS failed.
_CONNECTION_LOST = (ssl.SSLEOFError, ssl.SSLSyscallError, ssl.SSLZeroReturnError)


class TLSFailure(httpx.TransportError):
    """A TLS handshake that will fail again: an untrusted certificate, a refused client
    certificate, a server that does not speak TLS. The message is one line for users."""


def origin(url: httpx.URL) -> Origin:
    """Return *url*'s (scheme, host, port), the port made explicit."""
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme))


def server_origins(api_url: str) -> frozenset[Origin]:
    """Return the origins verified as the server's: the API's, and its https upgrade."""
    scheme, host, port = origin(httpx.URL(api_url))
    upgrade = {("https", host, 443)} if (scheme, port) == ("http", 80) else set()
    return frozenset({(scheme, host, port), *upgrade})


def ssl_context(trust: Trust, certificates: Certificates) -> ssl.SSLContext:
    """Return the client-side context that verifies as *trust* says and offers the client
    certificate of *certificates*. Raises ConfigError for files OpenSSL cannot load."""
    # As urllib3 (the client's) and httpx make theirs, but trusting only these locations;
    # with none, httpx's default (certifi's bundle, which httpx depends on).
    if trust.verify and not trust.locations:
        context = httpx.create_ssl_context(trust_env=False)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if not trust.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        for cafile in trust.cafiles:
            context.load_verify_locations(cafile=cafile)
        for capath in trust.capaths:
            context.load_verify_locations(capath=capath)
    except (ssl.SSLError, OSError) as exc:
        shown = ", ".join(str(location) for location in trust.locations)
        raise ConfigError(
            f"{trust.source}: cannot load CA certificates from {shown}: {_reason(exc)}"
        ) from None
    if certificates.client_cert is not None:
        try:
            context.load_cert_chain(certificates.client_cert, certificates.client_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load the client certificate {certificates.client_cert}"
                + (f" with the key {certificates.client_key}" if certificates.client_key else "")
                + f": {_reason(exc)}"
            ) from None
    return context


def explain(error: ssl.SSLError, url: httpx.URL, trust: Trust, certificates: Certificates) -> str:
    """Return the one-line message for the TLS *error* of a request to *url* verified with
    *trust*: what failed, for which host, and what setting fixes it."""
    host = url.host
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or _reason(error)
        if error.verify_code in _NAME_MISMATCH:
            return (
                f"TLS: the certificate of {host} is not valid for that name ({reason}): "
                "use a URL with a name the certificate lists"
            )
        if trust.locations:
            shown = ", ".join(str(location) for location in trust.locations)
            against = f"the CA certificates of {trust.source}: {shown}"
        else:
            against = "certifi's CA bundle"
        return (
            f"TLS: the certificate of {host} is not trusted ({reason}; checked against "
            f"{against}): for a private CA, set {trust.setting} to its certificate file"
        )
    reason = _reason(error)
    if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        if certificates.client_cert is None:
            return (
                f"TLS: {host} refused the connection ({reason}): it wants a client certificate; "
                "set SIMVUE_SERVER_CLIENT_CERTIFICATE (or client_cert in [server.certificates] "
                "of simvue.toml)"
            )
        return f"TLS: {host} refused the client certificate {certificates.client_cert} ({reason})"
    if "WRONG_VERSION_NUMBER" in reason:
        return f"TLS: {host} does not speak TLS on port {origin(url)[2]} ({reason}): use http://"
    return f"TLS with {host} failed ({reason})"


def _reason(exc: BaseException) -> str:
    """OpenSSL's short reason (``CERTIFICATE_VERIFY_FAILED``), else the message."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ssl.SSLError) and isinstance(reason, str) and reason:
        return reason
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind *exc* (its causes and contexts), if it is one that will repeat."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError) and not isinstance(current, _CONNECTION_LOST):
            return current
        current = current.__cause__ or current.__context__
    return None


class Network(httpx.AsyncBaseTransport):
    """The real network for one client (module docstring): a transport per TLS setting and
    proxy, chosen per request."""

    def __init__(
        self, settings: Settings, limits: httpx.Limits, on_connect: Callable[[], None]
    ) -> None:
        certificates = settings.certificates
        self._on_connect = on_connect
        self._pool = StoragePool(on_connect)
        self._certificates = certificates
        self._server_origins = server_origins(settings.url)
        self._proxies = {
            scheme: url
            for scheme, url in urllib.request.getproxies_environment().items()
            if scheme in _PROXY_SCHEMES
        }
        proxies = {None, *self._proxies.values()}
        server, storage = certificates.server, certificates.storage
        for trust in (server, storage):
            if not trust.verify:
                log.warning("TLS certificates of %s URLs are not checked (%s)", *_what(trust))
        server_context = ssl_context(server, certificates)
        for_server = {proxy: _transport(server_context, limits, proxy) for proxy in proxies}
        for_storage, storage_context = for_server, server_context
        if (server.verify, server.locations) != (storage.verify, storage.locations):
            storage_context = ssl_context(storage, certificates)
            for_storage = {proxy: _transport(storage_context, limits, proxy) for proxy in proxies}
        self._transports = {"server": for_server, "storage": for_storage}
        self._contexts = {"server": server_context, "storage": storage_context}
        self._owned = [*for_server.values()]
        if for_storage is not for_server:
            self._owned.extend(for_storage.values())

    def _trust(self, url: httpx.URL) -> Trust:
        if origin(url) in self._server_origins:
            return self._certificates.server
        return self._certificates.storage

    def _proxy(self, url: httpx.URL) -> str | None:
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if proxy is None or urllib.request.proxy_bypass(url.host):  # no_proxy
            return None
        return proxy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        trust = self._trust(request.url)
        proxy = self._proxy(request.url)
        try:
            if proxy is None and pooled(request):
                return await self._pool.handle(request, self._contexts[trust.role])
            request.extensions = {**request.extensions, "trace": self._trace}
            return await self._transports[trust.role][proxy].handle_async_request(request)
        except (httpx.ConnectError, httpx.ReadError, httpx.WriteError) as exc:
            error = _ssl_error(exc) if request.url.scheme == "https" else None
            if error is None:
                raise
            message = explain(error, request.url, trust, self._certificates)
            raise TLSFailure(message, request=request) from exc

    async def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace extension: counts the connections its pools open."""
        if event == "connection.connect_tcp.complete":
            self._on_connect()

    async def aclose(self) -> None:
        await self._pool.aclose()
        for transport in self._owned:
            await transport.aclose()


def _transport(
    context: ssl.SSLContext, limits: httpx.Limits, proxy: str | None
) -> httpx.AsyncHTTPTransport:
    try:
        return httpx.AsyncHTTPTransport(verify=context, limits=limits, trust_env=False, proxy=proxy)
    except (ImportError, ValueError, httpx.InvalidURL) as exc:
        # Not the exception's text: it may quote the proxy URL, password and all.
        shown = httpx.URL(proxy or "").copy_with(username=None, password=None)
        raise ConfigError(
            f"the proxy {shown} from the environment is not supported ({type(exc).__name__})"
        ) from None


def _what(trust: Trust) -> tuple[str, str]:
    return ("API" if trust.role == "server" else "storage"), trust.source
