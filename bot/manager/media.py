"""Which manager media URLs the bridge may fetch: amoCRM's own file hosts, never the inside.

A hook's `message.media` is fetched by the bridge and uploaded to the customer's chat, so a
URL pointing inside our network (or redirecting there) would hand its body to a stranger
(SSRF). Allowed: the hosts of AMOJO_BASE_URL and AMOCRM_BASE_URL (the configured amoCRM,
whatever its address), and hosts ending in one of MEDIA_ALLOWED_HOSTS, but only when every
address they resolve to is public. Checked again on every redirect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

import httpx

Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_REDIRECTS = 5


class MediaRefused(Exception):
    """The URL is not one the bridge fetches; the message says why (for the manager)."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class MediaPolicy:
    """Decides, per URL, whether manager media may be fetched from it."""

    def __init__(
        self,
        configured_hosts: Iterable[str],
        allowed_suffixes: Iterable[str],
        resolver: Resolver = resolve,
    ) -> None:
        self.configured = {host.lower().rstrip(".") for host in configured_hosts if host}
        self.suffixes = tuple(
            suffix.lower().strip().lstrip(".") for suffix in allowed_suffixes if suffix.strip()
        )
        self._resolve = resolver

    def _suffix_allowed(self, host: str) -> bool:
        return any(host == suffix or host.endswith("." + suffix) for suffix in self.suffixes)

    async def check(self, url: str | httpx.URL) -> httpx.URL:
        """The URL, parsed, when it may be fetched; MediaRefused otherwise."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise MediaRefused("the media address is not a URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise MediaRefused(f"the media address is not http(s): {parsed.scheme or '?'}://")
        host = parsed.host.lower().rstrip(".")
        if host in self.configured:
            return parsed
        if not self._suffix_allowed(host):
            raise MediaRefused(
                f"the media host {host} is not one amoCRM uses for files (MEDIA_ALLOWED_HOSTS)"
            )
        try:
            addresses = await self._resolve(host, parsed.port or 443)
        except OSError:
            raise MediaRefused(f"the media host {host} does not resolve") from None
        private = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_global]
        if not addresses or private:
            raise MediaRefused(f"the media host {host} resolves to a private address")
        return parsed
