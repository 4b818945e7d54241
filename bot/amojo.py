"""Client of the amojo Chats API: signed requests (spec §2) and the calls the bridge makes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp

from bot.limits import AMOJO_REQUEST_TIMEOUT_SECONDS
from bot.metrics import Metrics

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
USER_AGENT = "tg-amocrm-bridge"
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


def encode_body(payload: Any) -> bytes:
    """Serialise a request body; the signature covers exactly these bytes."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def content_md5(body: bytes) -> str:
    """Lowercase hex MD5 of the exact body bytes."""
    return hashlib.md5(body).hexdigest()


def http_date(moment: datetime | None = None) -> str:
    """RFC 2822 date as amojo expects it, e.g. `Wed, 15 Dec 2021 23:12:55 +0000`."""
    return format_datetime((moment or datetime.now(UTC)).astimezone(UTC))


def request_signature(
    secret: str, method: str, md5_hex: str, content_type: str, date: str, path: str
) -> str:
    """X-Signature of a request to amojo: HMAC-SHA1 over the canonical string (spec §2.2)."""
    canonical = "\n".join([method.upper(), md5_hex, content_type, date, path.split("?", 1)[0]])
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha1).hexdigest()


def hook_signature(secret: str, body: bytes) -> str:
    """X-Signature amojo puts on a hook: HMAC-SHA1 of the raw body (spec §3.1)."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def verify_hook_signature(secret: str, body: bytes, signature: str | None) -> bool:
    """Constant-time, case-insensitive check of a hook's X-Signature."""
    if not signature:
        return False
    expected = hook_signature(secret, body).encode()
    # Bytes: compare_digest raises TypeError on a str with non-ASCII characters (fuzzing found it).
    given = signature.strip().lower().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected, given)


def signed_headers(secret: str, method: str, path: str, body: bytes, date: str) -> dict[str, str]:
    """The four headers every amojo request carries."""
    md5_hex = content_md5(body) if body else EMPTY_MD5
    return {
        "Date": date,
        "Content-Type": CONTENT_TYPE,
        "Content-MD5": md5_hex,
        "X-Signature": request_signature(secret, method, md5_hex, CONTENT_TYPE, date, path),
    }


@dataclass(slots=True)
class AmojoError(Exception):
    """amojo answered with an error status (or not at all)."""

    status: int
    body: str
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"amojo HTTP {self.status}: {self.body[:300]}"

    @property
    def retryable(self) -> bool:
        """5xx and 429 may succeed later; other 4xx never will."""
        return self.status == 429 or self.status >= 500


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """What `connect` returns."""

    scope_id: str
    hook_api_version: str
    is_time_window_disabled: bool


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form only)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AmojoAnswer:
    """amojo's answer to one request."""

    status: int
    content: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        """The body decoded from JSON."""
        return json.loads(self.content)


class AmojoClient:
    """Signed calls to `{AMOJO_BASE_URL}/v2/origin/custom/...`.

    Requests go through aiohttp: httpx's connection pool costs several times more CPU per
    request (`python -m tests.bench.http_client`), and the amojo worker sends one request per
    customer message. Network failures surface as aiohttp errors or TimeoutError, which the
    worker retries.
    """

    def __init__(
        self,
        base_url: str,
        channel_id: str,
        secret: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = AMOJO_REQUEST_TIMEOUT_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        self.channel_id = channel_id
        self._secret = secret
        self._metrics = metrics
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self.set_timeout(timeout)

    async def aclose(self) -> None:
        """Close the connection pool (unless it was injected)."""
        if self._session is not None and self._owns_session:
            session, self._session = self._session, None
            await session.close()

    def set_timeout(self, seconds: float) -> None:
        """Change the connect and read timeout of later requests."""
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session

    async def request(self, method: str, path: str, payload: Any | None = None) -> AmojoAnswer:
        """Send one signed request; raises AmojoError on a non-2xx answer."""
        body = encode_body(payload) if payload is not None else b""
        headers = signed_headers(self._secret, method, path, body, http_date())
        started = time.perf_counter()
        outcome = "error"
        try:
            async with self._http().request(
                method,
                self._base_url + path,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                answer = AmojoAnswer(response.status, await response.read())
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            outcome = "ok" if answer.status < 300 else str(answer.status)
        finally:
            if self._metrics is not None:
                self._metrics.observe_call("amojo", outcome, time.perf_counter() - started)
        if answer.status >= 300:
            raise AmojoError(answer.status, answer.text, retry_after)
        return answer

    async def connect(
        self, account_id: str, *, title: str | None, time_window_disabled: bool
    ) -> ConnectResult:
        """Connect the channel to the account with hooks v2 (spec §1.4)."""
        payload: dict[str, Any] = {
            "account_id": account_id,
            "hook_api_version": "v2",
            "is_time_window_disabled": time_window_disabled,
        }
        if title:
            payload["title"] = title
        answer = await self.request("POST", f"/v2/origin/custom/{self.channel_id}/connect", payload)
        data = answer.json()
        return ConnectResult(
            scope_id=str(data["scope_id"]),
            hook_api_version=str(data.get("hook_api_version", "v2")),
            is_time_window_disabled=bool(data.get("is_time_window_disabled", time_window_disabled)),
        )

    async def send_event(self, scope_id: str, event_type: str, payload: dict[str, Any]) -> Any:
        """`new_message` or `edit_message` (spec §4); returns the decoded answer."""
        answer = await self.request(
            "POST", f"/v2/origin/custom/{scope_id}", {"event_type": event_type, "payload": payload}
        )
        return answer.json() if answer.content else {}

    async def delivery_status(
        self,
        scope_id: str,
        amo_message_id: str,
        status: int,
        error_code: int | None = None,
        error: str | None = None,
    ) -> None:
        """Report a manager message's fate (spec §5.4, step-by-step body shape)."""
        payload: dict[str, Any] = {"msgid": amo_message_id, "delivery_status": status}
        if status == -1:
            payload["error_code"] = error_code or 905
            payload["error"] = error or "Not delivered"
        await self.request(
            "POST", f"/v2/origin/custom/{scope_id}/{amo_message_id}/delivery_status", payload
        )

    async def react(self, scope_id: str, payload: dict[str, Any]) -> None:
        """Customer reaction or its removal (spec §5.6)."""
        await self.request("POST", f"/v2/origin/custom/{scope_id}/react", payload)

    async def typing(self, scope_id: str, payload: dict[str, Any]) -> None:
        """Customer typing (spec §5.5)."""
        await self.request("POST", f"/v2/origin/custom/{scope_id}/typing", payload)
