"""The network a benchmark run emulates: ``loopback`` (nothing added) or ``field``.

The field profile stands for presigned URLs into S3-compatible storage across a WAN:

- storage (nginx serving the blobs): ``limit_rate`` caps every response (one connection
  carries one request at a time, so the cap is per connection), and nginx's Lua module
  sleeps one round trip before every answer, plus :attr:`Profile.connect_round_trips` more
  on the first request of a connection (the TCP handshake and TLS 1.3's one round trip that
  a new HTTPS connection costs; the benchmark's storage is plain HTTP, so the cost is paid
  as a sleep). ``$connection_requests`` tells nginx which request of its connection it is.
- the API (the devserver): the ``request_delay`` fault switch makes every API and storage
  request wait one round trip, and ``upload_bandwidth`` caps each upload's body at the same
  per-connection rate (devserver/gate.py). The API's connection cost is not modelled: every
  client here keeps its API connections open.

Not modelled: TCP slow start (a real new connection needs a few round trips to reach the
cap), packet loss, and a cap on the link as a whole (only each connection is capped, so
concurrent connections add up until this machine's CPU is the bound).
"""

from __future__ import annotations

from dataclasses import dataclass

LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")
"""Debian's libnginx-mod-http-lua (and the devel kit it needs), in /usr/lib/nginx/modules."""
MODULE_DIR = "/usr/lib/nginx/modules"
DEFAULT_RATE = 50_000_000
DEFAULT_RTT_MS = 20.0
DEFAULT_CONNECT_ROUND_TRIPS = 2


@dataclass(frozen=True)
class Profile:
    """What a run adds to loopback: nothing (``loopback``) or a WAN (``field``)."""

    name: str
    per_connection_rate: int = 0
    """Bytes per second each storage connection (and each upload) may carry; 0: no cap."""
    rtt: float = 0.0
    """Seconds of one round trip, paid by every storage and API request."""
    connect_round_trips: int = 0
    """Extra round trips the first request of a new storage connection pays."""

    @property
    def field(self) -> bool:
        return self.name == "field"

    def nginx_main(self) -> str:
        """nginx.conf lines before ``events`` (the Lua module in the field)."""
        if not self.field:
            return ""
        return "".join(f"load_module {MODULE_DIR}/{module};\n" for module in LUA_MODULES)

    def nginx_location(self) -> str:
        """Directives of the blobs location: the cap and the sleep before each answer."""
        if not self.field:
            return ""
        first = self.rtt * (1 + self.connect_round_trips)
        return (
            f"limit_rate {self.per_connection_rate};\n"
            "      access_by_lua_block {\n"
            f'        if ngx.var.connection_requests == "1" then ngx.sleep({first:.6f})\n'
            f"        else ngx.sleep({self.rtt:.6f}) end\n"
            "      }"
        )

    def devserver_args(self) -> list[str]:
        """The devserver's fault switches that put the API behind the same network."""
        if not self.field:
            return []
        return [
            "--fault",
            f"request_delay={self.rtt}",
            "--fault",
            f"upload_bandwidth={self.per_connection_rate}",
        ]

    def describe(self) -> str:
        """One line for the report."""
        if not self.field:
            return "profile loopback: nothing added to loopback"
        return (
            f"profile field: {self.per_connection_rate / 1e6:g} MB/s per storage connection "
            f"and per upload, {self.rtt * 1000:g} ms round trip before every storage and API "
            f"answer, {self.connect_round_trips} more on a new storage connection"
        )


def loopback() -> Profile:
    return Profile("loopback")


def field(
    rate: int = DEFAULT_RATE,
    rtt_ms: float = DEFAULT_RTT_MS,
    connect_round_trips: int = DEFAULT_CONNECT_ROUND_TRIPS,
) -> Profile:
    return Profile("field", rate, rtt_ms / 1000, connect_round_trips)
