"""Signing of requests to amojo and verification of its hooks (spec §2, §3.1)."""

from __future__ import annotations

import pytest

from bot.amocrm.amojo import (
    AmojoAnswer,
    AmojoClient,
    content_md5,
    hook_signature,
    request_signature,
    server_clock_offset,
    signed_headers,
    verify_hook_signature,
)

SECRET = "f2d7f8704eff95087ed45b23ba99c0b5aac8278e"
CHANNEL = "344a5002-f8ca-454d-af3d-396180102ac7"
SCOPE = "344a5002-f8ca-454d-af3d-396180102ac7_52e591f7-c98f-4255-8495-827210138c81"

# The official vectors of spec §2.3: (method, path, Date, exact body, Content-MD5, X-Signature).
OFFICIAL_VECTORS = [
    pytest.param(
        "POST",
        f"/v2/origin/custom/{CHANNEL}/connect",
        "Wed, 15 Dec 2021 23:12:55 +0000",
        b'{"account_id":"52e591f7-c98f-4255-8495-827210138c81","title":"ChatsIntegration",'
        b'"hook_api_version":"v2"}',
        "2fbcb3c652b61e24e004daddfc73d0ce",
        "81211856ce0c5095f3e1a90c0a38dc9d736cfd55",
        id="V1-connect",
    ),
    pytest.param(
        "DELETE",
        f"/v2/origin/custom/{CHANNEL}/disconnect",
        "Wed, 15 Dec 2021 23:59:28 +0000",
        b'{"account_id":"52e591f7-c98f-4255-8495-827210138c81"}',
        "271fa2e4fb0ff84a3ef9689027bd1f38",
        "e1678e3b6aa674b5127f4feb448e6200ce0bfc72",
        id="V2-disconnect",
    ),
    pytest.param(
        "POST",
        f"/v2/origin/custom/{SCOPE}/typing",
        "Thu, 16 Dec 2021 16:01:21 +0000",
        b'{"conversation_id":"my_int-d5a421f7f218",'
        b'"sender":{"id":"my_int-1376265f-86df-4c49-a0c3-a4816df41af8"}}',
        "255a22566d68be207fa36804e78a523a",
        "e8263b1daf2b20396c02db6c8c846f95cc0f9540",
        id="V3-typing",
    ),
    pytest.param(
        "POST",
        f"/v2/origin/custom/{SCOPE}/079e44fb-fc22-476b-9e8a-421b688ec53b/delivery_status",
        "Thu, 16 Dec 2021 12:58:40 +0000",
        b'{"msgid":"079e44fb-fc22-476b-9e8a-421b688ec53b","delivery_status":2,'
        b'"error_code":905,"error":"Error text"}',
        "a0bbbac729c6341f0a521e2db7a8a236",
        "ca51f810785031385a801f41103244713c1a2352",
        id="V4-delivery-status",
    ),
]


@pytest.mark.parametrize(("method", "path", "date", "body", "md5", "signature"), OFFICIAL_VECTORS)
def test_official_vectors(
    method: str, path: str, date: str, body: bytes, md5: str, signature: str
) -> None:
    assert content_md5(body) == md5
    assert request_signature(SECRET, method, md5, "application/json", date, path) == signature
    assert signed_headers(SECRET, method, path, body, date) == {
        "Date": date,
        "Content-Type": "application/json",
        "Content-MD5": md5,
        "X-Signature": signature,
    }


def test_get_with_empty_body_signs_the_path_without_query() -> None:
    path = (
        f"/v2/origin/custom/{SCOPE}/chats/31d43a78-e09d-46ae-8994-7e93560169b8/history"
        "?limit=50&offset=0"
    )
    headers = signed_headers(SECRET, "GET", path, b"", "Thu, 16 Dec 2021 23:30:00 +0000")

    assert headers["Content-MD5"] == "d41d8cd98f00b204e9800998ecf8427e"
    assert headers["X-Signature"] == "95dac20fa4859c18ae10a87509d9e85bf28b79ab"


def test_method_is_signed_in_upper_case() -> None:
    md5 = content_md5(b"{}")
    date = "Thu, 16 Dec 2021 23:30:00 +0000"
    path = f"/v2/origin/custom/{SCOPE}"
    assert request_signature(SECRET, "post", md5, "application/json", date, path) == (
        request_signature(SECRET, "POST", md5, "application/json", date, path)
    )


HOOK_BODY = '{"account_id":"x","message":{"message":{"text":"Привет"}}}'.encode()


def test_hook_with_its_signature_is_accepted() -> None:
    assert verify_hook_signature(SECRET, HOOK_BODY, hook_signature(SECRET, HOOK_BODY))


def test_hook_signature_is_case_insensitive() -> None:
    assert verify_hook_signature(SECRET, HOOK_BODY, hook_signature(SECRET, HOOK_BODY).upper())


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("0" * 40, id="wrong"),
        pytest.param(hook_signature("another-secret", HOOK_BODY), id="other-secret"),
        pytest.param(hook_signature(SECRET, HOOK_BODY + b" "), id="other-body"),
    ],
)
def test_hook_with_a_bad_signature_is_refused(signature: str | None) -> None:
    assert not verify_hook_signature(SECRET, HOOK_BODY, signature)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_trailing_newline_the_signature_does_not_cover_is_accepted(ending: bytes) -> None:
    """Live Kommo hooks end with a newline their X-Signature leaves out (spec §3.1)."""
    signature = hook_signature(SECRET, HOOK_BODY)
    assert verify_hook_signature(SECRET, HOOK_BODY + ending, signature)
    assert verify_hook_signature(
        SECRET, HOOK_BODY + ending, hook_signature(SECRET, HOOK_BODY + ending)
    )


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("0" * 40, id="forged"),
        pytest.param(hook_signature("another-secret", HOOK_BODY), id="other-secret"),
        pytest.param(hook_signature(SECRET, HOOK_BODY + b"\n\n"), id="two-newlines"),
    ],
)
def test_a_forged_signature_with_a_trailing_newline_is_refused(signature: str) -> None:
    assert not verify_hook_signature(SECRET, HOOK_BODY + b"\n", signature)
    assert not verify_hook_signature(SECRET, HOOK_BODY + b"\n\n", hook_signature(SECRET, HOOK_BODY))


def test_a_date_a_day_off_or_broken_is_never_followed() -> None:
    now = 1_800_000_000.0
    assert server_clock_offset("Fri, 31 Dec 9999 23:59:59 -1200", now) is None
    assert server_clock_offset("not a date", now) is None
    assert server_clock_offset(None, now) is None
    # "-0000" is UTC without a zone said, whatever the local time zone is.
    assert server_clock_offset("Fri, 15 Jan 2027 08:00:00 -0000", 1_800_000_000.0) == 0.0


def test_the_clock_correction_does_not_flap_near_its_threshold() -> None:
    client = AmojoClient("http://127.0.0.1:1", "channel", SECRET)
    corrections = []
    for offset in [31.0, 30.2, 29.6, 30.4, 29.8, 12.0, 9.0, 29.0, 31.0]:
        client._learn_clock(AmojoAnswer(200, b"", offset))
        corrections.append(client.clock_correction)
    assert corrections == [31.0, 30.2, 29.6, 30.4, 29.8, 12.0, 0.0, 0.0, 31.0]
