"""Client of the amoCRM REST API v4: Bearer auth, OAuth2 token rotation, paced below 7 rps."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
from aiolimiter import AsyncLimiter

from bot.amocrm.crm_records import (
    EVENTS_PAGE_LIMIT,
    CallAttachment,
    ChatMessageEvent,
    NewCall,
    Talk,
    int_or_none,
    parse_call_attachment,
    parse_chat_message_event,
    parse_talk,
)
from bot.common.limits import (
    AMOCRM_PACED_RATE_PER_SECOND,
    AMOCRM_RATE_LIMIT_MAX_WAIT_SECONDS,
    AMOCRM_RATE_LIMIT_RETRIES,
    AMOCRM_TOKEN_REFRESH_MARGIN_SECONDS,
)
from bot.common.metrics import Metrics, observed_call
from bot.common.settings import Settings
from storage import Repository
from storage.crm import TokenPair, load_token_pair, save_token_pair

logger = logging.getLogger(__name__)

API = "amocrm"
TOKEN_PATH = "/oauth2/access_token"


class CrmError(Exception):
    """The CRM answered with an error status."""

    def __init__(
        self, status: int, message: str, body: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(f"amoCRM HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """A rate limit or a server error may pass; other statuses will not."""
        return self.status == 429 or self.status >= 500

    @property
    def retry_delay(self) -> float | None:
        """The usual backoff (a job never waits on the CRM's Retry-After)."""
        return None

    @property
    def give_up_after(self) -> float | None:
        """As long as the job's kind allows."""
        return None


class CrmUnreadable(CrmError):
    """A success status with a body that is not the API's (a maintenance page, a proxy)."""


class CrmAuthError(CrmError):
    """No usable token: the grant was refused, revoked or never made."""


class TokenProvider(Protocol):
    """Source of the current access token."""

    async def access_token(self) -> str:
        """A token valid right now."""
        ...

    async def after_unauthorized(self, rejected: str) -> str | None:
        """A replacement for a token the CRM answered 401 to, or None when there is none."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds."""
        ...


class StaticToken:
    """A long-lived access token from the settings."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def access_token(self) -> str:
        """The configured token."""
        return self._token

    async def after_unauthorized(self, rejected: str) -> str | None:
        """A long-lived token cannot be renewed."""
        return None

    async def aclose(self) -> None:
        """Nothing to release."""


class CrmPacer:
    """Spaces requests evenly below the account limit and pauses everyone after a 429."""

    def __init__(self, rate: float = AMOCRM_PACED_RATE_PER_SECOND) -> None:
        # Capacity 1: requests are spaced evenly, so no one-second window holds more than `rate`.
        self._limiter = AsyncLimiter(1, 1 / rate)
        self._paused_until = 0.0

    async def wait(self) -> None:
        """Wait for this request's turn."""
        delay = self._paused_until - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        await self._limiter.acquire()

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` (the CRM said 429)."""
        until = asyncio.get_running_loop().time() + seconds
        self._paused_until = max(self._paused_until, until)


def problem_message(response: httpx.Response) -> str:
    """A readable message from an error response (application/problem+json or plain)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if not isinstance(data, dict):
        return str(data)[:300]
    parts = [str(data[key]) for key in ("title", "detail", "hint") if data.get(key)]
    for group in data.get("validation-errors") or []:
        for error in group.get("errors") or [] if isinstance(group, dict) else []:
            if isinstance(error, dict):
                parts.append(f"{error.get('path', '?')}: {error.get('detail', error.get('code'))}")
    return "; ".join(parts) or response.reason_phrase


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from `Retry-After` (seconds or an HTTP date) or a `retry_after` body field."""
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    try:
        data = response.json()
    except ValueError:
        return None
    value = data.get("retry_after") if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True, slots=True)
class OAuthApp:
    """The integration's OAuth2 credentials (spec §9.2)."""

    client_id: str
    client_secret: str
    redirect_uri: str
    auth_code: str | None = None

    @property
    def code_sha256(self) -> str | None:
        """Fingerprint of the configured code, to know whether it was exchanged already."""
        if not self.auth_code:
            return None
        return hashlib.sha256(self.auth_code.encode()).hexdigest()


class OAuthTokens:
    """Exchanges the code once, then rotates the single-use refresh token, one refresh at a time.

    Every new pair is committed to SQLite before its access token is handed out, so a crash
    can lose at most a pair the CRM issued but we never used (the old one is still stored).
    """

    def __init__(
        self,
        base_url: str,
        app: OAuthApp,
        repo: Repository,
        *,
        pacer: CrmPacer,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        refresh_margin: float = AMOCRM_TOKEN_REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app = app
        self._repo = repo
        self._pacer = pacer
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), transport=transport, timeout=timeout
        )
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._lock = asyncio.Lock()
        self._pair: TokenPair | None = None
        self._unsaved = False
        self._code_refused = False

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def access_token(self) -> str:
        """The current access token, refreshed first when it is about to expire."""
        pair = self._pair
        if pair is not None and not self._unsaved and not self._due(pair):
            return pair.access_token
        async with self._lock:
            return (await self._current()).access_token

    async def after_unauthorized(self, rejected: str) -> str | None:
        """Refresh once after a 401, unless another request already did."""
        async with self._lock:
            pair = await self._current()
            if pair.access_token != rejected:
                return pair.access_token
            logger.info("amoCRM answered 401; refreshing the access token")
            return (await self._refresh(pair)).access_token

    def _due(self, pair: TokenPair) -> bool:
        return pair.expires_at - self._clock() <= self._refresh_margin

    async def _current(self) -> TokenPair:
        if self._unsaved and self._pair is not None:
            await self._persist(self._pair)
        if self._pair is None:
            self._pair = await load_token_pair(self._repo)
        code_sha = self._app.code_sha256
        if code_sha and not self._code_refused and self._pair_code() != code_sha:
            try:
                return await self._exchange_code()
            except CrmAuthError as exc:
                if self._pair is None:
                    raise
                self._code_refused = True
                logger.warning("AMOCRM_AUTH_CODE refused (%s); keeping the stored tokens", exc)
        if self._pair is None:
            raise CrmAuthError(
                401,
                "no OAuth token stored yet: set AMOCRM_AUTH_CODE to a fresh authorization "
                "code (it is valid for 20 minutes)",
            )
        if self._due(self._pair):
            try:
                return await self._refresh(self._pair)
            except (CrmError, httpx.HTTPError) as exc:
                if isinstance(exc, CrmAuthError) or self._pair.expires_at <= self._clock():
                    raise
                logger.warning("token refresh failed, the current token is still valid: %s", exc)
        return self._pair

    def _pair_code(self) -> str | None:
        return self._pair.auth_code_sha256 if self._pair is not None else None

    async def _exchange_code(self) -> TokenPair:
        logger.info("exchanging AMOCRM_AUTH_CODE for an OAuth token pair")
        body = {"grant_type": "authorization_code", "code": self._app.auth_code}
        return await self._grant(body, self._app.code_sha256)

    async def _refresh(self, pair: TokenPair) -> TokenPair:
        body = {"grant_type": "refresh_token", "refresh_token": pair.refresh_token}
        new_pair = await self._grant(body, pair.auth_code_sha256)
        logger.info("amoCRM access token refreshed")
        return new_pair

    async def _grant(self, body: dict[str, Any], code_sha: str | None) -> TokenPair:
        await self._pacer.wait()
        response = await self._http.post(
            TOKEN_PATH,
            json={
                "client_id": self._app.client_id,
                "client_secret": self._app.client_secret,
                "redirect_uri": self._app.redirect_uri,
                **body,
            },
        )
        if response.status_code in (400, 401, 403):
            raise CrmAuthError(
                response.status_code,
                f"amoCRM refused the {body['grant_type']} grant: {problem_message(response)} "
                "(grant access again and set a fresh AMOCRM_AUTH_CODE)",
                response.text,
            )
        if response.status_code >= 400:
            raise CrmError(
                response.status_code,
                problem_message(response),
                response.text,
                retry_after(response),
            )
        data = response.json()
        pair = TokenPair(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
            expires_at=self._clock() + float(data.get("expires_in", 86400)),
            auth_code_sha256=code_sha,
        )
        # The old refresh token is dead from here on: keep the new pair even if storing fails,
        # and refuse to use it until it is stored.
        self._pair = pair
        self._unsaved = True
        await self._persist(pair)
        return pair

    async def _persist(self, pair: TokenPair) -> None:
        async with self._repo.transaction() as tx:
            await save_token_pair(tx, pair)
        self._unsaved = False


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise CrmUnreadable(response.status_code, "the answer is not JSON") from None
    if not isinstance(data, dict):
        raise CrmUnreadable(response.status_code, "the answer is not a JSON object")
    return data


class CrmClient:
    """Requests to `{AMOCRM_BASE_URL}/api/v4/...`."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        pacer: CrmPacer | None = None,
        metrics: Metrics | None = None,
        max_rate_limit_wait: float = AMOCRM_RATE_LIMIT_MAX_WAIT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = httpx.URL(self.base_url).netloc.decode() or self.base_url
        self._tokens = tokens
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout)
        self._pacer = pacer or CrmPacer()
        self._metrics = metrics
        self._max_rate_limit_wait = max_rate_limit_wait
        self.last_success_at: float | None = None

    async def aclose(self) -> None:
        """Close the connection pools."""
        await self._http.aclose()
        await self._tokens.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One authorised request; refreshes once on 401, waits out 429; raises CrmError."""
        token = await self._tokens.access_token()
        refreshed = False
        rate_limited = 0
        while True:
            response = await self._send(method, path, token, **kwargs)
            status = response.status_code
            if status == 401 and not refreshed:
                refreshed = True
                renewed = await self._tokens.after_unauthorized(token)
                if renewed is not None:
                    token = renewed
                    continue
            if status == 429 and rate_limited < AMOCRM_RATE_LIMIT_RETRIES:
                delay = retry_after(response)
                if delay is None:
                    delay = 2.0**rate_limited
                if delay <= self._max_rate_limit_wait:
                    rate_limited += 1
                    logger.warning("amoCRM rate limit (429) on %s; waiting %.1fs", path, delay)
                    self._pacer.pause(delay)
                    continue
            if status >= 400:
                raise CrmError(
                    status, problem_message(response), response.text, retry_after(response)
                )
            if 300 <= status < 400:
                location = response.headers.get("Location", "?")
                raise CrmError(status, f"redirected to {location}", response.text)
            self.last_success_at = time.time()
            return response

    async def _send(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        await self._pacer.wait()
        with observed_call(self._metrics, API, self.host) as call:
            response = await self._http.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
            )
            call.answered(response.status_code, ok=response.status_code < 400)
            return response

    async def account_amojo_id(self) -> str:
        """The account's amojo id (`GET /api/v4/account?with=amojo_id`)."""
        response = await self.request("GET", "/api/v4/account", params={"with": "amojo_id"})
        try:
            data = response.json()
        except ValueError:
            raise CrmUnreadable(response.status_code, "the account answer is not JSON") from None
        amojo_id = data.get("amojo_id") if isinstance(data, dict) else None
        if not amojo_id:
            raise CrmError(response.status_code, "the account answer has no amojo_id")
        return str(amojo_id)

    async def user_amojo_id(self, user_id: int) -> str | None:
        """A user's id in the chats service (`GET /api/v4/users/{id}?with=amojo_id`; admin)."""
        response = await self.request(
            "GET", f"/api/v4/users/{user_id}", params={"with": "amojo_id"}
        )
        try:
            data = response.json()
        except ValueError:
            return None
        value = data.get("amojo_id") if isinstance(data, dict) else None
        return str(value) if value else None

    async def chat_message_events(
        self, since: float, until: float, page: int, limit: int = EVENTS_PAGE_LIMIT
    ) -> tuple[list[ChatMessageEvent], bool]:
        """One page of `outgoing_chat_message` events created in [since, until]; (events,
        whether there is a next page). Filtered by contact: amoCRM's documented way for chat
        message events (events-and-notes.md, "Особенности фильтрации")."""
        response = await self.request(
            "GET",
            "/api/v4/events",
            params={
                "filter[type][]": "outgoing_chat_message",
                "filter[entity][]": "contact",
                "filter[created_at][from]": int(since),
                "filter[created_at][to]": int(until) + 1,
                "page": page,
                "limit": limit,
            },
        )
        if response.status_code == 204 or not response.content:
            return [], False
        data = _json_object(response)
        events = (data.get("_embedded") or {}).get("events") or []
        parsed = [event for event in map(parse_chat_message_event, events) if event is not None]
        has_next = bool(((data.get("_links") or {}).get("next") or {}).get("href"))
        return parsed, has_next and len(events) >= limit

    async def contact_chats(self, contact_ids: list[int]) -> dict[int, list[str]]:
        """The amo chats of each contact (`GET /api/v4/contacts/chats?contact_id[]=…`)."""
        response = await self.request(
            "GET",
            "/api/v4/contacts/chats",
            params=[("contact_id[]", str(contact_id)) for contact_id in contact_ids],
        )
        found: dict[int, list[str]] = {contact_id: [] for contact_id in contact_ids}
        if response.status_code == 204 or not response.content:
            return found
        for link in (_json_object(response).get("_embedded") or {}).get("chats") or []:
            if not isinstance(link, dict):
                continue
            contact, chat = int_or_none(link.get("contact_id")), link.get("chat_id")
            if contact is not None and isinstance(chat, str) and chat:
                found.setdefault(contact, []).append(chat)
        return found

    async def lead_contacts(self, lead_id: int) -> list[int]:
        """The contacts of a lead (`GET /api/v4/leads/{id}?with=contacts`)."""
        response = await self.request(
            "GET", f"/api/v4/leads/{lead_id}", params={"with": "contacts"}
        )
        if response.status_code == 204 or not response.content:
            return []
        contacts = (_json_object(response).get("_embedded") or {}).get("contacts") or []
        return [
            contact_id
            for contact_id in (int_or_none(c.get("id")) for c in contacts if isinstance(c, dict))
            if contact_id is not None
        ]

    async def get_talk(self, talk_id: int) -> Talk:
        """One talk (`GET /api/v4/talks/{id}`)."""
        response = await self.request("GET", f"/api/v4/talks/{talk_id}")
        return parse_talk(response.json())

    async def close_talk(self, talk_id: int, *, force: bool) -> None:
        """Close a talk; without `force` amoCRM's NPS bot may run first (202 on success)."""
        await self.request("POST", f"/api/v4/talks/{talk_id}/close", json={"force_close": force})

    async def add_call(self, call: NewCall) -> CallAttachment:
        """Log one call (`POST /api/v4/calls`) and say where amoCRM attached it."""
        response = await self.request("POST", "/api/v4/calls", json=[call.as_json()])
        try:
            data = response.json()
        except ValueError:
            data = response.text
        attachment = parse_call_attachment(data)
        if attachment.errors:
            logger.warning("amoCRM call errors: %s", attachment.errors)
        return attachment


def build_crm_client(
    settings: Settings,
    repo: Repository,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: Metrics | None = None,
) -> CrmClient:
    """The CRM client with a long-lived token, or OAuth2 tokens kept in SQLite."""
    pacer = CrmPacer()
    tokens: TokenProvider
    if settings.uses_oauth:
        secret = settings.AMOCRM_CLIENT_SECRET
        code = settings.AMOCRM_AUTH_CODE
        app = OAuthApp(
            client_id=settings.AMOCRM_CLIENT_ID or "",
            client_secret=secret.get_secret_value() if secret else "",
            redirect_uri=settings.AMOCRM_REDIRECT_URI or "",
            auth_code=code.get_secret_value() if code else None,
        )
        tokens = OAuthTokens(settings.amocrm_base_url, app, repo, pacer=pacer, transport=transport)
    else:
        token = settings.AMOCRM_ACCESS_TOKEN
        tokens = StaticToken(token.get_secret_value() if token else "")
    return CrmClient(
        settings.amocrm_base_url, tokens, transport=transport, pacer=pacer, metrics=metrics
    )
