"""Which manager media URLs may be fetched (no SSRF): configured hosts, public allowed hosts."""

from __future__ import annotations

import re
import socket

import pytest

from bot.manager.media import MediaPolicy, MediaRefused, MediaUnresolved

ADDRESSES = {
    "drive-b.amocrm.ru": ["185.3.140.10"],
    "files.kommo.com": ["2a00:1450:4010:c05::8b"],
    "evil.amocrm.ru": ["10.0.0.5"],
    "mixed.kommo.com": ["185.3.140.11", "169.254.169.254"],
    "nat64.kommo.com": ["64:ff9b::a00:5"],
    "mapped.kommo.com": ["::ffff:10.0.0.5"],
    "sitelocal.kommo.com": ["fec0::1"],
}


async def fake_resolve(host: str, port: int) -> list[str]:
    if host == "flaky.amocrm.ru":
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    if host not in ADDRESSES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return ADDRESSES[host]


POLICY = MediaPolicy(
    ["https://amojo.amocrm.ru", "http://127.0.0.1:8080"], (".amocrm.ru", "kommo.com"), fake_resolve
)


@pytest.mark.parametrize(
    "url",
    [
        "https://amojo.amocrm.ru/attachments/a.jpg",
        "http://127.0.0.1:8080/attachments/a.jpg",  # the configured amojo, even on loopback
        "https://drive-b.amocrm.ru/download/x",
        "https://files.kommo.com/x",
    ],
)
async def test_allowed(url: str) -> None:
    assert str(await POLICY.check(url)) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://example.com/a.jpg", "not one amoCRM uses"),
        ("https://amocrm.ru.evil.com/a.jpg", "not one amoCRM uses"),
        ("https://evil.amocrm.ru/a.jpg", "private address"),
        ("https://mixed.kommo.com/a.jpg", "private address"),
        ("https://gone.amocrm.ru/a.jpg", "does not exist"),
        ("http://127.0.0.1:6379/", "not one amoCRM uses"),  # the configured host, another port
        ("https://nat64.kommo.com/a", "private address"),
        ("https://mapped.kommo.com/a", "private address"),
        ("https://sitelocal.kommo.com/a", "private address"),
        ("http://10.0.0.5/a.jpg", "not one amoCRM uses"),
        ("http://[::1]/a.jpg", "not one amoCRM uses"),
        ("file:///etc/passwd", "not http(s)"),
        ("ftp://amojo.amocrm.ru/a", "not http(s)"),
    ],
)
async def test_refused(url: str, why: str) -> None:
    with pytest.raises(MediaRefused, match=re.escape(why)):
        await POLICY.check(url)


async def test_a_dns_hiccup_is_not_a_refusal() -> None:
    with pytest.raises(MediaUnresolved):
        await POLICY.check("https://flaky.amocrm.ru/a.jpg")


async def test_the_configured_amojo_over_http_is_checked_like_any_host() -> None:
    # https://amojo.amocrm.ru is configured; http:// to it is not the same address.
    with pytest.raises(MediaRefused, match="does not exist"):
        await POLICY.check("http://amojo.amocrm.ru/attachments/a.jpg")
