"""Which manager media URLs may be fetched (no SSRF): configured hosts, public allowed hosts."""

from __future__ import annotations

import re

import pytest

from bot.manager.media import MediaPolicy, MediaRefused

ADDRESSES = {
    "drive-b.amocrm.ru": ["185.3.140.10"],
    "files.kommo.com": ["2a00:1450:4010:c05::8b"],
    "evil.amocrm.ru": ["10.0.0.5"],
    "mixed.kommo.com": ["185.3.140.11", "169.254.169.254"],
}


async def fake_resolve(host: str, port: int) -> list[str]:
    if host not in ADDRESSES:
        raise OSError("no such host")
    return ADDRESSES[host]


POLICY = MediaPolicy({"amojo.amocrm.ru", "127.0.0.1"}, (".amocrm.ru", "kommo.com"), fake_resolve)


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
        ("https://gone.amocrm.ru/a.jpg", "does not resolve"),
        ("http://10.0.0.5/a.jpg", "not one amoCRM uses"),
        ("http://[::1]/a.jpg", "not one amoCRM uses"),
        ("file:///etc/passwd", "not http(s)"),
        ("ftp://amojo.amocrm.ru/a", "not http(s)"),
    ],
)
async def test_refused(url: str, why: str) -> None:
    with pytest.raises(MediaRefused, match=re.escape(why)):
        await POLICY.check(url)
