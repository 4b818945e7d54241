"""A manager's file is decoded a bounded piece at a time, however well it is compressed."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest

from bot.manager.spool import UnknownEncoding, bounded_body

PIECE = 256 * 1024


def transport(body: bytes, encoding: str) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return httpx.Response(
            200, stream=httpx.ByteStream(body), headers={"Content-Encoding": encoding}
        )

    return httpx.MockTransport(answer)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", lambda data: data)],
)
async def test_a_compression_bomb_is_decoded_in_bounded_pieces(
    encoding: str, compress: object
) -> None:
    original = bytes(64 * 1024 * 1024)  # 64 MB of zeros: gzip makes ~64 kB of it
    body = compress(original)  # type: ignore[operator]
    headers = {"Accept-Encoding": "identity"}
    sizes = []
    async with (
        httpx.AsyncClient(transport=transport(body, encoding), headers=headers) as http,
        http.stream("GET", "https://amojo.amocrm.ru/a") as response,
    ):
        async for piece in bounded_body(response, PIECE):
            sizes.append(len(piece))
            if sum(sizes) > 8 * 1024 * 1024:
                break  # the caller's size limit stops it here: nothing larger was held
    assert max(sizes) <= PIECE
    assert sum(sizes) <= 8 * 1024 * 1024 + PIECE


async def test_an_unknown_encoding_is_refused_not_passed_on() -> None:
    headers = {"Accept-Encoding": "identity"}
    async with (
        httpx.AsyncClient(transport=transport(b"\x00" * 10, "br"), headers=headers) as http,
        http.stream("GET", "https://amojo.amocrm.ru/a") as response,
    ):
        with pytest.raises(UnknownEncoding):
            async for _ in bounded_body(response, PIECE):
                pass
