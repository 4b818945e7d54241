"""Customer → amoCRM, end to end against the loopback fakes."""

from __future__ import annotations

import aiohttp
import pytest

from bot.amocrm.amojo import content_md5, request_signature
from simulators.factories import make_photo, private_message_update
from tests.harness import CHANNEL_SECRET, Fakes, RunningBridge


async def test_text_arrives_signed_and_exact(fakes: Fakes, bridge: RunningBridge) -> None:
    text = "Здравствуйте! Нужна доставка в Казань 🚚🙂 — «срочно»"
    fakes.telegram.push_update(private_message_update(501, 10, text=text))

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="message")

    message = fakes.amojo.messages[0]
    assert message["message"] == {"type": "text", "text": text}
    assert message["conversation_id"] == "tg-501"
    assert message["msgid"] == "tg-501-10"
    assert message["sender"]["id"] == "tg-501"
    assert message["sender"]["name"] == "Ivan Petrov"
    assert message["sender"]["profile_link"] == "https://t.me/user501"
    assert fakes.amojo.rejected == []
    request = next(r for r in fakes.amojo.requests if r.path.endswith(bridge.scope_id))
    expected = request_signature(
        CHANNEL_SECRET,
        "POST",
        content_md5(request.body),
        "application/json",
        request.headers["Date"],
        request.path,
    )
    assert request.headers["X-Signature"] == expected
    assert fakes.telegram.confirmed_offset > 1


async def test_photo_link_serves_the_telegram_bytes(fakes: Fakes, bridge: RunningBridge) -> None:
    content = bytes(range(256)) * 400
    file_id, unique_id = fakes.telegram.add_file(content)
    photo = make_photo(file_id, unique_id, len(content))
    fakes.telegram.push_update(private_message_update(502, 11, caption="Вот фото", photo=photo))

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="photo message")
    message = fakes.amojo.messages[0]["message"]
    assert message["type"] == "picture"
    assert message["text"] == "Вот фото"
    assert message["file_size"] == len(content)
    assert message["file_name"].endswith(".jpg")
    link = message["media"]
    assert link.startswith(f"{bridge.url}/files/")
    assert "TEST-token" not in link and "123456" not in link
    async with aiohttp.ClientSession() as http, http.get(link) as response:
        assert response.status == 200
        assert await response.read() == content


@pytest.mark.parametrize(
    ("mime_type", "served_as", "disposition"),
    [
        ("text/html", "application/octet-stream", "attachment"),
        ("image/svg+xml", "application/octet-stream", "attachment"),
        ("application/pdf", "application/octet-stream", "attachment"),
        ("image/png", "image/png", "inline"),
    ],
)
async def test_file_links_never_serve_a_customer_file_as_a_page(
    fakes: Fakes, bridge: RunningBridge, mime_type: str, served_as: str, disposition: str
) -> None:
    content = b"<html><script>alert(document.cookie)</script></html>"
    file_id, unique_id = fakes.telegram.add_file(content)
    document = {
        "file_id": file_id,
        "file_unique_id": unique_id,
        "file_name": "invoice.html",
        "mime_type": mime_type,
        "file_size": len(content),
    }
    fakes.telegram.push_update(private_message_update(503, 12, document=document))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="document")

    link = fakes.amojo.messages[0]["message"]["media"]
    async with aiohttp.ClientSession() as http, http.get(link) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].split(";")[0] == served_as
        assert response.headers["Content-Disposition"].startswith(disposition)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]
        assert await response.read() == content
