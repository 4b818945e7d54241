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
from dataclasses import dataclass
from typing import Any

import httpx

from bot.common.texts import Phrase, phrase

Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# getaddrinfo's "no such name" answers: anything else (EAI_AGAIN…) may pass.
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
# Python counts these as global, yet they reach inside (NAT64, IPv4-compatible, site-local).
_NOT_PUBLIC = (
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("fec0::/10"),
)


# IPv6 forms that carry an IPv4 address in their last 32 bits (RFC 6052, RFC 2765/6145, the
# deprecated IPv4-compatible form): each is judged by the IPv4 address it carries.
_LAST_32_BITS = (
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("::ffff:0:0:0/96"),
    ipaddress.ip_network("::/96"),
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (mapped, 6to4, Teredo, translated…)."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in network for network in _LAST_32_BITS):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public(address: str) -> bool:
    """Whether an address is on the public internet (not private, loopback, link-local…).

    An IPv6 address that carries an IPv4 one is public only when that IPv4 address is.
    """
    ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded:
            return all(is_public(str(inner)) for inner in embedded)
        if any(ip in network for network in _NOT_PUBLIC):
            return False
    return ip.is_global


def origin(url: httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, (url.host or "").lower().rstrip("."), port


@dataclass(frozen=True, slots=True)
class Fetch:
    """A URL the policy allows, and the address to connect to (None: the host's own)."""

    url: httpx.URL
    address: str | None = None

    def request(self) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """(URL, headers, extensions) of a GET that connects to the checked address only.

        The URL names the address; the Host header and TLS's server name stay the host's, so
        the certificate is still checked against the host.
        """
        if self.address is None:
            return self.url, {}, {}
        host = self.url.host
        default = {"https": 443, "http": 80}.get(self.url.scheme)
        port = self.url.port
        authority = host if port is None or port == default else f"{host}:{port}"
        pinned = self.url.copy_with(host=self.address)
        return pinned, {"Host": authority}, {"sni_hostname": host}


class MediaRefused(Exception):
    """The URL is not one the bridge fetches; the reason says why (for the manager)."""

    def __init__(self, reason: Phrase) -> None:
        super().__init__(str(reason))
        self.reason = reason


class MediaUnresolved(Exception):
    """The media host's name could not be looked up just now (the DNS may answer later)."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class MediaPolicy:
    """Decides, per URL, whether manager media may be fetched from it."""

    def __init__(
        self,
        configured_origins: Iterable[str],
        allowed_suffixes: Iterable[str],
        resolver: Resolver = resolve,
    ) -> None:
        # The configured amoCRM's own addresses: scheme, host and port exactly as configured.
        self.configured = {origin(httpx.URL(url)) for url in configured_origins if url}
        self.suffixes = tuple(
            suffix.lower().strip().lstrip(".") for suffix in allowed_suffixes if suffix.strip()
        )
        self._resolve = resolver

    def _suffix_allowed(self, host: str) -> bool:
        return any(host == suffix or host.endswith("." + suffix) for suffix in self.suffixes)

    async def check(self, url: str | httpx.URL) -> httpx.URL:
        """The URL, parsed, when it may be fetched; MediaRefused otherwise."""
        return (await self.resolve(url)).url

    async def resolve(self, url: str | httpx.URL) -> Fetch:
        """How to fetch the URL when it may be fetched (MediaRefused otherwise): for a host
        allowed by its suffix, the public address that was checked, to connect to exactly
        that one (a second lookup could answer differently)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise MediaRefused(phrase("media.not_url")) from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise MediaRefused(phrase("media.not_http", scheme=parsed.scheme or "?"))
        host = parsed.host.lower().rstrip(".")
        if origin(parsed) in self.configured:
            return Fetch(parsed)
        if not self._suffix_allowed(host):
            raise MediaRefused(phrase("media.host_not_allowed", host=host))
        try:
            addresses = await self._resolve(host, parsed.port or 443)
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_NAME:
                raise MediaRefused(phrase("media.host_missing", host=host)) from None
            raise MediaUnresolved(f"the media host {host} did not resolve: {exc}") from None
        except OSError as exc:
            raise MediaUnresolved(f"the media host {host} did not resolve: {exc}") from None
        private = [address for address in addresses if not is_public(address)]
        if not addresses or private:
            raise MediaRefused(phrase("media.host_private", host=host))
        return Fetch(parsed, addresses[0])
