"""Manager media on its way to Telegram: fetched from amoCRM's file hosts (checked on every
hop, decoded a bounded piece at a time) into this process's spool folder on disk."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from aiogram.types import (
    FSInputFile,
    Message,
)

from bot.common.limits import (
    MEDIA_CHUNK_BYTES,
    MEDIA_DOWNLOAD_DEADLINE_SECONDS,
    TELEGRAM_PHOTO_UPLOAD_LIMIT,
    TELEGRAM_UPLOAD_LIMIT,
)
from bot.common.texts import phrase
from bot.jobs.worker import RetryLater
from bot.manager.mapping import ManagerMessage
from bot.manager.media import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    MediaPolicy,
    MediaRefused,
    MediaUnresolved,
)

logger = logging.getLogger(__name__)


class UnknownEncoding(Exception):
    """A body in a Content-Encoding the bridge does not decode."""


async def bounded_body(response: httpx.Response, piece: int) -> AsyncIterator[bytes]:
    """The decoded body in pieces of at most `piece` bytes, however well it is compressed.

    httpx decodes a whole received chunk at once: a small gzip'd chunk could expand to many
    megabytes before a size limit sees it. Decoded here, at most `piece` bytes at a time.
    """
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        async for chunk in response.aiter_raw(piece):
            yield chunk
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnknownEncoding(encoding)
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, told by its header
    try:
        async for chunk in response.aiter_raw(piece):
            data = decoder.decompress(chunk, piece)
            while True:
                if data:
                    yield data
                if not decoder.unconsumed_tail:
                    break
                data = decoder.decompress(decoder.unconsumed_tail, piece)
        tail = decoder.flush()
    except zlib.error as exc:
        raise UnknownEncoding(f"{encoding} that does not decode: {exc}") from None
    if tail:
        yield tail


class MediaSpool:
    """This process's folder for media in transfer, under `root` (a lock marks it in use).

    At start, folders of processes that are gone (killed mid-upload) are removed; a folder
    another running bridge holds is left alone.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root or Path(tempfile.gettempdir()) / "tg-amocrm-bridge-media"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in self.root.glob("spool-*"):
            self._remove_if_abandoned(folder)
        self.path = Path(tempfile.mkdtemp(prefix="spool-", dir=self.root))
        self._lock = (self.path / ".lock").open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    @staticmethod
    def _remove_if_abandoned(folder: Path) -> None:
        try:
            with (folder / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # held by a running bridge (or unreadable): not ours to remove

    def close(self) -> None:
        """Remove the folder (nothing is in transfer any more)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()


def _discard(path: str) -> None:
    """Remove a spooled file (a fast local unlink; a missing one is fine)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def sent_file_id(sent: Message) -> str | None:
    """The file_id Telegram gave the file of a sent media message."""
    if sent.photo:
        return sent.photo[-1].file_id
    for media in (sent.video, sent.voice, sent.audio, sent.sticker, sent.animation, sent.document):
        if media is not None:
            return str(media.file_id)
    return None


def _default_name(message: ManagerMessage) -> str:
    tail = message.media.rsplit("/", 1)[-1].split("?", 1)[0]
    if "." in tail:
        return tail
    extension = {
        "picture": "jpg",
        "video": "mp4",
        "voice": "ogg",
        "audio": "mp3",
        "sticker": "webp",
    }.get(message.type, "bin")
    return f"{message.type}.{extension}"


class MediaDownloading:
    """Manager media fetched into the spool (a part of ManagerMessageDelivery)."""

    media_policy: MediaPolicy
    spool_dir: Path
    _http: httpx.AsyncClient

    async def _download(self, message: ManagerMessage, kind: str) -> FSInputFile | None:
        """The hook's media as an upload, or None when it cannot be uploaded (too big, gone).

        MediaRefused when the URL (or a redirect) points anywhere but amoCRM's file hosts.
        """
        try:
            fetch = await self.media_policy.resolve(message.media)
        except MediaUnresolved as exc:
            raise RetryLater(str(exc)) from None
        limit = TELEGRAM_PHOTO_UPLOAD_LIMIT if kind == "photo" else TELEGRAM_UPLOAD_LIMIT
        if message.file_size > limit:
            return None
        try:
            # A whole download, however slowly its bytes drip in, gets this long.
            async with asyncio.timeout(MEDIA_DOWNLOAD_DEADLINE_SECONDS):
                for _ in range(MAX_REDIRECTS + 1):
                    url, headers, extensions = fetch.request()
                    async with self._http.stream(
                        "GET", url, headers=headers, extensions=extensions
                    ) as response:
                        location = response.headers.get("Location")
                        if response.status_code not in REDIRECT_STATUSES or not location:
                            return await self._read_upload(message, response, limit)
                    fetch = await self.media_policy.resolve(fetch.url.join(location))
        except TimeoutError:
            raise RetryLater(
                f"media download took over {MEDIA_DOWNLOAD_DEADLINE_SECONDS:.0f} s"
            ) from None
        except MediaUnresolved as exc:
            raise RetryLater(str(exc)) from None
        raise MediaRefused(phrase("media.redirects", count=MAX_REDIRECTS))

    async def _read_upload(
        self, message: ManagerMessage, response: httpx.Response, limit: int
    ) -> FSInputFile | None:
        """The body of a media answer spooled to disk as an upload (None: unusable)."""
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryLater(f"media download: HTTP {response.status_code}")
        if response.status_code >= 300:
            logger.warning(
                "media of %s: HTTP %d, sending the link", message.amo_id, response.status_code
            )
            return None
        name = message.file_name or _default_name(message)
        size = 0
        try:
            spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - handed on to the upload
                dir=self.spool_dir, prefix="media-", delete=False
            )
        except OSError as exc:
            logger.error("media of %s not spooled (%s); sending the link", message.amo_id, exc)
            return None
        try:
            with spool:
                async for chunk in bounded_body(response, MEDIA_CHUNK_BYTES):
                    size += len(chunk)
                    if size > limit:
                        _discard(spool.name)
                        return None
                    spool.write(chunk)
        except UnknownEncoding as exc:
            _discard(spool.name)
            logger.warning("media of %s: body in %s, sending the link", message.amo_id, exc)
            return None
        except OSError as exc:  # the disk is full, a quota: the customer still gets the link
            _discard(spool.name)
            logger.error("media of %s not spooled (%s); sending the link", message.amo_id, exc)
            return None
        except BaseException:
            _discard(spool.name)
            raise
        if size == 0:
            _discard(spool.name)
            return None
        return FSInputFile(spool.name, filename=name, chunk_size=MEDIA_CHUNK_BYTES)
