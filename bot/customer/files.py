"""Signed, expiring links under `/files/{token}` through which amoCRM downloads customer media."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from bot.common.limits import FILE_LINK_TTL_SECONDS


@dataclass(frozen=True, slots=True)
class FileRef:
    """A Telegram file as amoCRM will download it."""

    file_id: str
    file_name: str
    mime_type: str
    file_size: int
    expires_at: int
    bot: int = 0  # the bot whose file it is (0: the primary bot)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FileLinks:
    """Makes and checks file tokens; the bot token never appears in them."""

    def __init__(self, key: bytes, public_base_url: str, ttl: int = FILE_LINK_TTL_SECONDS) -> None:
        self._key = key
        self._base = public_base_url.rstrip("/")
        self._ttl = ttl

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:20])

    def token(
        self, file_id: str, file_name: str, mime_type: str, file_size: int, *, bot: int = 0
    ) -> str:
        """A token that stays valid for the configured time (a file_id is one bot's only)."""
        claims: dict[str, str | int] = {
            "f": file_id,
            "n": file_name,
            "m": mime_type,
            "s": file_size,
            "e": int(time.time()) + self._ttl,
        }
        if bot:
            claims["b"] = bot
        body = _b64(json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def url(
        self, file_id: str, file_name: str, mime_type: str, file_size: int, *, bot: int = 0
    ) -> str:
        """Public URL of a file."""
        token = self.token(file_id, file_name, mime_type, file_size, bot=bot)
        return f"{self._base}/files/{token}"

    def parse(self, token: str, now: float | None = None) -> FileRef | None:
        """The file behind a valid, unexpired token; None otherwise."""
        body, _, signature = token.partition(".")
        if not body or not signature or not (body + signature).isascii():
            return None  # compare_digest takes ASCII str only (a link is base64url)
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        try:
            claims = json.loads(_unb64(body))
            ref = FileRef(
                file_id=str(claims["f"]),
                file_name=str(claims["n"]),
                mime_type=str(claims["m"]),
                file_size=int(claims["s"]),
                expires_at=int(claims["e"]),
                bot=int(claims.get("b", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if ref.expires_at < (now if now is not None else time.time()):
            return None
        return ref
