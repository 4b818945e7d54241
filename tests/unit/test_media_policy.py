"""Which manager media URLs may be fetched (no SSRF): configured hosts, public allowed hosts."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from bot.manager.media import MediaPolicy, MediaRefused, MediaUnresolved, is_public

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


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "::ffff:0:a9fe:a9fe",  # IPv4-translated 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::ffff:127.0.0.1",
        "::127.0.0.1",  # IPv4-compatible
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_ipv6_forms_that_carry_a_private_ipv4_are_not_public(address: str) -> None:
    assert not is_public(address)


def test_ipv6_forms_that_carry_a_public_ipv4_are_judged_by_it() -> None:
    assert is_public("2002:b903:8c0a::1")  # 6to4 of 185.3.140.10
    assert is_public("2a00:1450:4010:c05::8b")


async def test_a_fetch_connects_to_the_address_that_was_checked() -> None:
    answers = iter([["185.3.140.10"], ["127.0.0.1"]])  # DNS rebinding: a second lookup lies

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    policy = MediaPolicy([], (".amocrm.ru",), rebinding)
    fetch = await policy.resolve("https://drive-b.amocrm.ru:8443/download/x?y=1")
    url, headers, extensions = fetch.request()
    assert str(url) == "https://185.3.140.10:8443/download/x?y=1"
    assert headers == {"Host": "drive-b.amocrm.ru:8443"}
    assert extensions == {"sni_hostname": "drive-b.amocrm.ru"}

    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"file")

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        response = await http.get(url, headers=headers, extensions=extensions)
    assert response.content == b"file"
    assert (
        seen[0].url.host == "185.3.140.10" and seen[0].headers["Host"] == "drive-b.amocrm.ru:8443"
    )
    configured = await POLICY.resolve("https://amojo.amocrm.ru/attachments/a.jpg")
    assert configured.request() == (configured.url, {}, {})
