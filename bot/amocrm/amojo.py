"""Client of the amojo Chats API: signed requests (spec §2) and the calls the bridge makes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.common.limits import (
    AMOJO_CLOCK_OFFSET_MAX_SECONDS,
    AMOJO_CLOCK_SKEW_TOLERANCE_SECONDS,
    AMOJO_CLOCK_SKEW_UNDO_SECONDS,
    AMOJO_REFUSAL_GIVE_UP_SECONDS,
    AMOJO_REQUEST_TIMEOUT_SECONDS,
)
from bot.common.metrics import Metrics, observed_call

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
    """Constant-time, case-insensitive check of a hook's X-Signature.

    A body captured from a live Kommo account ends with a newline its signature does not cover
    (spec §3.1), so the body without one trailing `\n` or `\r\n` is accepted too.
    """
    if not signature:
        return False
    # Bytes: compare_digest raises TypeError on a str with non-ASCII characters (fuzzing found it).
    given = signature.strip().lower().encode("utf-8", "surrogateescape")
    candidates = [body]
    for ending in (b"\r\n", b"\n"):
        if body.endswith(ending):
            candidates.append(body[: -len(ending)])
            break
    matched = False
    for candidate in candidates:  # every candidate is compared: no early exit to time
        matched |= hmac.compare_digest(hook_signature(secret, candidate).encode(), given)
    return matched


def server_clock_offset(date_header: str | None, local_now: float) -> float | None:
    """Seconds the server's `Date` header is ahead of our clock (None when it has none)."""
    if not date_header:
        return None
    try:
        moment = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC with no zone said (RFC 5322 §3.3)
        moment = moment.replace(tzinfo=UTC)
    offset = moment.timestamp() - local_now
    # A clock a day off is not amojo's: a proxy's or a broken header, never followed.
    return offset if abs(offset) <= AMOJO_CLOCK_OFFSET_MAX_SECONDS else None


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
        """5xx, 429 and signature refusals may succeed later; other 4xx never will.

        amojo answers 401/403 to a request whose Date is more than 15 minutes off (spec §2.1):
        a clock that is put right, or a secret that is fixed, lets the same request through.
        """
        return self.status == 429 or self.status >= 500 or self.refused_signature

    @property
    def refused_signature(self) -> bool:
        """amojo did not accept the request's signature (secret or clock)."""
        return self.status in (401, 403)

    @property
    def give_up_after(self) -> float | None:
        """How long a job may keep retrying this failure (None: as long as its kind allows)."""
        return AMOJO_REFUSAL_GIVE_UP_SECONDS if self.refused_signature else None

    @property
    def retry_delay(self) -> float | None:
        """amojo's Retry-After, if it sent one."""
        return self.retry_after


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
    clock_offset: float | None = None

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
        self.host = urlsplit(self._base_url).netloc or self._base_url
        self._session = session
        self._owns_session = session is None
        self.set_timeout(timeout)
        # Seconds added to our clock when dating a request: amojo's clock as its answers show
        # it, once ours is more than the tolerance off (a signature lives 15 minutes).
        self.clock_correction = 0.0
        self.clock_offset: float | None = None
        self.signature_refused_at: float | None = None
        self.signature_refusal = ""

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
        answer, retry_after = await self._send(method, path, body)
        if answer.status in (401, 403) and self._learn_clock(answer):
            # Our Date was off and is corrected now: the same request, dated right, once more.
            answer, retry_after = await self._send(method, path, body)
        if answer.status >= 300:
            error = AmojoError(answer.status, answer.text, retry_after)
            if error.refused_signature:
                self.signature_refused_at = time.time()
                self.signature_refusal = self.describe_refusal(error)
                raise AmojoError(answer.status, self.signature_refusal, retry_after)
            raise error
        if self.signature_refused_at is not None:
            self.signature_refused_at = None
            logger.info("amojo accepts our signatures again")
        return answer

    def describe_refusal(self, error: AmojoError) -> str:
        """A signature refusal in words, with the likely cause."""
        offset = self.clock_offset
        if offset is not None and abs(offset) > AMOJO_CLOCK_SKEW_TOLERANCE_SECONDS:
            cause = f"clock skew? amojo's clock is {offset:+.0f} s from ours"
        else:
            cause = "check AMOJO_CHANNEL_SECRET"
        return f"amojo refused the signature (HTTP {error.status}; {cause}): {error.body[:200]}"

    def _learn_clock(self, answer: AmojoAnswer) -> bool:
        """Follow amojo's clock when ours is too far off; True when the correction changed."""
        offset = answer.clock_offset
        if offset is None:
            return False
        self.clock_offset = offset
        # Hysteresis: Date has 1 s steps, so an offset near the threshold must not flip the
        # correction on and off with every answer.
        active = self.clock_correction != 0.0
        limit = AMOJO_CLOCK_SKEW_UNDO_SECONDS if active else AMOJO_CLOCK_SKEW_TOLERANCE_SECONDS
        correction = offset if abs(offset) > limit else 0.0
        changed = (correction == 0.0) != (self.clock_correction == 0.0) or (
            abs(correction - self.clock_correction) > AMOJO_CLOCK_SKEW_TOLERANCE_SECONDS
        )
        if changed:
            if correction:
                logger.warning(
                    "clock skew? amojo's Date is %+.0f s from our clock; dating requests by "
                    "amojo's clock (fix the server's time sync)",
                    correction,
                )
            else:
                logger.info("our clock agrees with amojo's again")
        self.clock_correction = correction
        return changed

    async def _send(self, method: str, path: str, body: bytes) -> tuple[AmojoAnswer, float | None]:
        moment = datetime.now(UTC) + timedelta(seconds=self.clock_correction)
        headers = signed_headers(self._secret, method, path, body, http_date(moment))
        with observed_call(self._metrics, "amojo", self.host) as call:
            async with self._http().request(
                method,
                self._base_url + path,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                answer = AmojoAnswer(
                    response.status,
                    await response.read(),
                    server_clock_offset(response.headers.get("Date"), time.time()),
                )
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            call.answered(answer.status, ok=answer.status < 300)
        if answer.status < 300:
            self._learn_clock(answer)
        return answer, retry_after

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

    async def history(
        self, scope_id: str, amo_chat_id: str, *, offset: int, limit: int
    ) -> list[dict[str, Any]]:
        """One page of a chat's messages, newest first (spec §5.3; 204 means none)."""
        answer = await self.request(
            "GET",
            f"/v2/origin/custom/{scope_id}/chats/{amo_chat_id}/history"
            f"?offset={offset}&limit={limit}",
        )
        if answer.status == 204 or not answer.content:
            return []
        messages = answer.json().get("messages") if isinstance(answer.json(), dict) else None
        return [m for m in messages or [] if isinstance(m, dict)]

    async def create_chat(
        self,
        scope_id: str,
        conversation_id: str,
        user: dict[str, Any],
        *,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Create (or find: an existing conversation's chat is returned) amo's chat (spec §5.1).

        `source` is the external id of the amoCRM source the chat belongs to (None: default).
        """
        body: dict[str, Any] = {"conversation_id": conversation_id, "user": user}
        if source is not None:
            body["source"] = {"external_id": source}
        answer = await self.request("POST", f"/v2/origin/custom/{scope_id}/chats", body)
        data = answer.json()
        return data if isinstance(data, dict) else {}
