"""Fake amojo Chats API (signed requests, hooks to the bridge) for end-to-end tests."""

import asyncio
import contextlib
import enum
import hashlib
import hmac
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp import web

from simulators.base import FakeServer

SIGNATURE_TTL = 15 * 60
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
INBOUND_TYPES = frozenset(
    {"text", "contact", "file", "video", "picture", "voice", "audio", "sticker", "location"}
)
MEDIA_TYPES = frozenset({"file", "video", "picture", "voice", "audio", "sticker"})
SIZED_TYPES = frozenset({"file", "video", "picture"})
DELIVERY_STATUSES = frozenset({1, 2, -1})
DELIVERY_ERRORS = frozenset({901, 902, 903, 904, 905})
MANAGER_ID = "76fc2bea-902f-425c-9a3d-dcdac4766090"


class _Auto(enum.Enum):
    AUTO = "auto"


AUTO = _Auto.AUTO


def sign_request(
    secret: str,
    method: str,
    path: str,
    body: bytes,
    *,
    date: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Headers of a request signed for amojo (§2): Date, Content-Type, Content-MD5, X-Signature."""
    date = date or format_datetime(datetime.now(UTC))
    md5 = hashlib.md5(body).hexdigest()
    path = path.split("?", 1)[0]
    to_sign = "\n".join([method.upper(), md5, content_type, date, path])
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).hexdigest()
    return {
        "Date": date,
        "Content-Type": content_type,
        "Content-MD5": md5,
        "X-Signature": signature,
    }


class AmojoError(Exception):
    """An amojo error answer."""

    def __init__(self, status: int, description: str, error_type: str = "") -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.error_type = error_type or {
            400: "BadRequest",
            403: "Forbidden",
            404: "NotFound",
        }.get(status, "Error")

    def response(self) -> web.Response:
        """The JSON error answer (the body format is undocumented; see spec §4.3)."""
        return web.json_response(
            {
                "error_code": self.status,
                "error_type": self.error_type,
                "error_description": self.description,
            },
            status=self.status,
        )


def _bad(description: str) -> AmojoError:
    return AmojoError(400, description)


@dataclass
class _Failure:
    target: str
    status: int
    times: int
    body: Any
    retry_after: int | None = None


@dataclass
class RecordedRequest:
    """One request the fake received (accepted or not)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    at: float = 0.0


def _require_str(obj: dict[str, Any], key: str, where: str, *, non_empty: bool = True) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (non_empty and not value):
        raise _bad(f"{where}{key}: must be a non-empty string")
    return value


def _optional_int(obj: dict[str, Any], key: str, where: str) -> None:
    if key in obj and (not isinstance(obj[key], int) or isinstance(obj[key], bool)):
        raise _bad(f"{where}{key}: must be an integer")


def _validate_source(source: Any) -> None:
    """`source.external_id`: printable ASCII and space, at most 40 characters (spec §4.1)."""
    if source is None:
        return
    external_id = source.get("external_id") if isinstance(source, dict) else None
    if (
        not isinstance(external_id, str)
        or not 0 < len(external_id) <= 40
        or not all(32 <= ord(char) < 127 for char in external_id)
    ):
        raise _bad("payload.source.external_id: printable ASCII, at most 40 characters")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class FakeAmojo(FakeServer):
    """The amojo Chats API of one channel and one account."""

    def __init__(
        self,
        channel_id: str,
        secret: str,
        account_id: str,
        *,
        require_connect: bool = True,
        fetch_media: bool = True,
    ) -> None:
        super().__init__()
        self.channel_id = channel_id
        self.secret = secret
        self.account_id = account_id
        self.scope_id = f"{channel_id}_{account_id}"
        self.require_connect = require_connect
        self.fetch_media = fetch_media
        self.now: Callable[[], float] = time.time
        self.connected = False
        self.requests: list[RecordedRequest] = []
        self.rejected: list[tuple[str, str]] = []
        self.connects: list[dict[str, Any]] = []
        self.disconnects: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.edits: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.reactions: list[dict[str, Any]] = []
        self.typings: list[dict[str, Any]] = []
        self.chats: dict[str, dict[str, Any]] = {}
        self.attempts: dict[str, int] = defaultdict(int)
        self.conversations: dict[str, str] = {}
        self.users: dict[str, str] = {}
        self.hooks_sent: list[dict[str, Any]] = []
        self.hook_results: list[tuple[int, str]] = []
        self.hook_message_ids: set[str] = set()
        # amo chat id → its messages, both directions, oldest first (served newest first).
        self.history: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.history_reads: list[tuple[str, int, int]] = []
        self.media_fetches: list[dict[str, Any]] = []
        self.media_downloads: list[str] = []
        self.down_status: int | None = None
        self.response_delay = 0.0
        self.delay_before = False
        self._failures: list[_Failure] = []
        self._media: dict[str, tuple[str, bytes]] = {}
        self._redirects: dict[str, str] = {}
        self._dripping: dict[str, tuple[str, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        # The account's CRM (a FakeCrm): chats and manager messages show up there too.
        self.crm: Any = None
        base = "/v2/origin/custom"
        router = self.app.router
        router.add_post(f"{base}/{{channel_id}}/connect", self._connect)
        router.add_delete(f"{base}/{{channel_id}}/disconnect", self._disconnect)
        router.add_post(f"{base}/{{scope_id}}", self._send)
        router.add_post(f"{base}/{{scope_id}}/typing", self._typing)
        router.add_post(f"{base}/{{scope_id}}/react", self._react)
        router.add_post(f"{base}/{{scope_id}}/chats", self._create_chat)
        router.add_get(f"{base}/{{scope_id}}/chats/{{chat_id}}/history", self._history)
        router.add_post(f"{base}/{{scope_id}}/{{msgid}}/delivery_status", self._delivery_status)
        router.add_get("/attachments/{name}", self._attachment)

    # ---- test API -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the server, background media fetches and the hook client."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()
            self._http = None
        await super().close()

    def fail(
        self,
        target: str,
        status: int,
        times: int = 1,
        body: Any = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        """Fail the next `times` signed requests whose path ends with target or event_type.

        `retry_after` adds a `Retry-After: <seconds>` header (a rate limit, status 429).
        """
        self._failures.append(_Failure(target, status, times, body, retry_after))

    def set_down(self, status: int | None) -> None:
        """Answer every request with status (e.g. 503) until set_down(None)."""
        self.down_status = status

    def delay(self, seconds: float, *, before: bool = False) -> None:
        """Slow every answer down; by default the request is processed first, then delayed."""
        self.response_delay = seconds
        self.delay_before = before

    def messages_for(self, conversation_id: str) -> list[dict[str, Any]]:
        """Stored new messages of one of our conversations, in order of arrival."""
        return [m for m in self.messages if m["conversation_id"] == conversation_id]

    def message_by_msgid(self, msgid: str) -> dict[str, Any] | None:
        """The stored message with this msgid of ours, if any."""
        return next((m for m in self.messages if m["msgid"] == msgid), None)

    def statuses_for(self, amo_msgid: str) -> list[dict[str, Any]]:
        """Delivery statuses reported for one amo message id."""
        return [s for s in self.statuses if s["amo_msgid"] == amo_msgid]

    def add_media(self, name: str, content_type: str, content: bytes) -> str:
        """Serve content under /attachments/{name}; returns its URL."""
        self._media[name] = (content_type, content)
        return f"{self.url}/attachments/{name}"

    def add_dripping_media(self, name: str, content_type: str, byte_every: float) -> str:
        """Serve an endless body under /attachments/{name}, one byte every `byte_every` s."""
        self._dripping[name] = (content_type, byte_every)
        return f"{self.url}/attachments/{name}"

    def add_redirect(self, name: str, location: str) -> str:
        """Answer /attachments/{name} with a 302 to `location`; returns its URL."""
        self._redirects[name] = location
        return f"{self.url}/attachments/{name}"

    def sign_hook(self, body: bytes) -> str:
        """X-Signature of a hook: hex HMAC-SHA1 of the raw body with the channel secret."""
        return hmac.new(self.secret.encode(), body, hashlib.sha1).hexdigest()

    def sign(self, method: str, path: str, body: bytes, date: str | None = None) -> dict[str, str]:
        """Headers of a request to this fake signed with the channel secret."""
        return sign_request(self.secret, method, path, body, date=date)

    async def post_hook(
        self,
        bridge_base_url: str,
        scope_id: str | None,
        body: dict[str, Any] | bytes,
        *,
        signature: str | _Auto | None = AUTO,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> tuple[int, str]:
        """POST a hook to {bridge}/amojo/{scope_id} once, like amojo (no retries, ≤5 s)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signature is AUTO:
            headers["X-Signature"] = self.sign_hook(raw)
        elif isinstance(signature, str):
            headers["X-Signature"] = signature
        if isinstance(body, dict):
            self.hooks_sent.append(body)
            message_id = body.get("message", {}).get("message", {}).get("id")
            if isinstance(message_id, str) and message_id not in self.hook_message_ids:
                self.hook_message_ids.add(message_id)
                with contextlib.suppress(KeyError, TypeError):  # a malformed test hook
                    self._record_manager_message(body["message"])
        if self._http is None:
            self._http = aiohttp.ClientSession()
        url = f"{bridge_base_url.rstrip('/')}/amojo/{scope_id or self.scope_id}"
        try:
            async with self._http.post(
                url, data=raw, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                result = (response.status, await response.text())
        except TimeoutError:
            result = (0, "timeout")
        except aiohttp.ClientError as error:  # the bridge is down: amojo does not retry
            result = (0, f"unreachable: {type(error).__name__}")
        self.hook_results.append(result)
        await self._notify()
        return result

    def _record_manager_message(self, envelope: dict[str, Any]) -> None:
        """A manager message enters its chat's history (and amoCRM's events feed) whether or
        not its hook arrives."""
        message = {k: v for k, v in envelope["message"].items() if v not in (None, "", 0)}
        entry = {
            "timestamp": envelope["timestamp"],
            "msec_timestamp": envelope["msec_timestamp"],
            "sender": {"id": envelope["sender"]["id"], "name": "Manager"},
            "receiver": envelope["receiver"] if isinstance(envelope["receiver"], dict) else {},
            "message": message,
        }
        chat_id = envelope["conversation"]["id"]
        self.history[chat_id].append(entry)
        if self.crm is not None:
            receiver = envelope.get("receiver")
            phone = str(receiver.get("phone") or "") if isinstance(receiver, dict) else ""
            self.crm.outgoing_message(chat_id, message["id"], envelope["timestamp"], phone)

    def drop_hook(self, hook: dict[str, Any]) -> str:
        """A manager writes, and the hook never reaches the bridge (amojo lost it): the message
        is in the chat's history and the events feed only. Returns its amo id."""
        message_id = str(hook["message"]["message"]["id"])
        self.hooks_sent.append(hook)
        if message_id not in self.hook_message_ids:
            self.hook_message_ids.add(message_id)
            self._record_manager_message(hook["message"])
        return message_id

    def message_hook(
        self,
        conversation_client_id: str | None,
        *,
        amo_conversation_id: str | None = None,
        msg_type: str = "text",
        text: str = "",
        media: str = "",
        thumbnail: str = "",
        file_name: str = "",
        file_size: int = 0,
        markup: dict[str, Any] | None = None,
        reply_to_amo_id: str | None = None,
        receiver_client_id: str | None = None,
        receiver_phone: str = "",
        receiver_amo_id: str | None = None,
        sender_id: str = MANAGER_ID,
        msg_id: str | None = None,
        media_group_id: str | None = None,
        source_external_id: str | None = None,
        template: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An outgoing message hook v2 (§3.2); write-first when conversation_client_id is None."""
        now = self.now()
        conversation: dict[str, Any] = {
            "id": amo_conversation_id or self._amo_conversation(conversation_client_id)
        }
        receiver: dict[str, Any] = {
            "id": receiver_amo_id or str(uuid.uuid4()),
            "phone": receiver_phone,
            "email": "",
        }
        if conversation_client_id is not None:
            conversation["client_id"] = conversation_client_id
            client_id = receiver_client_id or self._client_user(conversation_client_id)
            if client_id is not None:
                receiver["client_id"] = client_id
                receiver["id"] = receiver_amo_id or self._amo_user(client_id)
        message: dict[str, Any] = {
            "id": msg_id or str(uuid.uuid4()),
            "type": msg_type,
            "text": text,
            "markup": markup,
            "tag": "",
            "media": media,
            "thumbnail": thumbnail,
            "file_name": file_name,
            "file_size": file_size,
        }
        if media_group_id is not None:
            message["media_group_id"] = media_group_id
        if template is not None:
            message["template"] = template
        if reply_to_amo_id is not None:
            message["reply_to"] = {"message": self._embedded(reply_to_amo_id)}
        hook: dict[str, Any] = {
            "account_id": self.account_id,
            "time": int(now),
            "message": {
                "receiver": receiver,
                "sender": {"id": sender_id},
                "conversation": conversation,
                "timestamp": int(now),
                "msec_timestamp": int(now * 1000),
                "message": message,
            },
        }
        if source_external_id is not None:
            hook["message"]["source"] = {"external_id": source_external_id}
        return hook

    def typing_hook(
        self,
        conversation_client_id: str | None,
        *,
        amo_conversation_id: str | None = None,
        user_id: str = MANAGER_ID,
        user_location: str = "typing",
    ) -> dict[str, Any]:
        """A typing hook (§3.4); user_location "typing" (example) or "action" (field table)."""
        now = int(self.now())
        conversation: dict[str, Any] = {
            "id": amo_conversation_id or self._amo_conversation(conversation_client_id)
        }
        if conversation_client_id is not None:
            conversation["client_id"] = conversation_client_id
        typing: dict[str, Any] = {"conversation": conversation, "expired_at": now + 5}
        action: dict[str, Any] = {"typing": typing}
        if user_location == "action":
            action["user"] = {"id": user_id}
        else:
            typing["user"] = {"id": user_id}
        return {"account_id": self.account_id, "time": now, "action": action}

    def reaction_hook(
        self,
        conversation_client_id: str | None,
        *,
        amo_message_id: str | None = None,
        client_msgid: str | None = None,
        emoji: str | None = "👍",
        reaction_type: str = "react",
        shape: str = "msgid",
        amo_conversation_id: str | None = None,
        user_id: str = MANAGER_ID,
    ) -> dict[str, Any]:
        """A reaction hook (§3.5) with shape "msgid" (example) or "message" (field table)."""
        now = self.now()
        if amo_message_id is None and client_msgid is not None:
            stored = self.message_by_msgid(client_msgid)
            amo_message_id = stored["amo_id"] if stored else str(uuid.uuid4())
        if amo_message_id is None:
            raise ValueError("reaction_hook needs amo_message_id or client_msgid")
        conversation: dict[str, Any] = {
            "id": amo_conversation_id or self._amo_conversation(conversation_client_id)
        }
        if conversation_client_id is not None:
            conversation["client_id"] = conversation_client_id
        reaction: dict[str, Any] = {
            "user": {"id": user_id},
            "conversation": conversation,
            "type": reaction_type,
        }
        if shape == "message":
            message: dict[str, Any] = {
                "id": amo_message_id,
                "sender": {"id": user_id},
                "receiver": {"id": str(uuid.uuid4())},
                "timestamp": int(now),
                "msec_timestamp": int(now * 1000),
            }
            if client_msgid is not None:
                message["client_id"] = client_msgid
            reaction["message"] = message
        else:
            reaction["msgid"] = amo_message_id
        if emoji is not None and reaction_type == "react":
            reaction["emoji"] = emoji
        return {"account_id": self.account_id, "time": int(now), "action": {"reaction": reaction}}

    def describe(self) -> str:
        """Summary for timeout messages."""
        return (
            f"{len(self.messages)} messages, {len(self.edits)} edits, "
            f"{len(self.statuses)} statuses {self.statuses[-3:]}, {len(self.reactions)} "
            f"reactions, {len(self.typings)} typings, rejected {self.rejected[-3:]}, "
            f"last requests {[(r.path, r.status) for r in self.requests[-5:]]}"
        )

    def _amo_conversation(self, client_id: str | None) -> str:
        if client_id is None:
            return str(uuid.uuid4())
        return self.conversations.setdefault(client_id, str(uuid.uuid4()))

    def _amo_user(self, client_id: str) -> str:
        return self.users.setdefault(client_id, str(uuid.uuid4()))

    def _client_user(self, conversation_id: str) -> str | None:
        for message in reversed(self.messages_for(conversation_id)):
            sender = message.get("sender")
            if isinstance(sender, dict) and "ref_id" not in sender:
                return str(sender["id"])
        return None

    def _embedded(self, amo_id: str) -> dict[str, Any]:
        stored = next((m for m in self.messages if m["amo_id"] == amo_id), None)
        if stored is None:
            return {"id": amo_id, "type": "text", "text": ""}
        return {
            "id": amo_id,
            "msgid": stored["msgid"],
            "type": stored["message"]["type"],
            "text": stored["message"].get("text", ""),
            "sender": {"id": self._amo_user(stored["sender"]["id"])},
        }

    # ---- HTTP plumbing --------------------------------------------------------------------

    def _verify(self, request: web.Request, body: bytes) -> None:
        headers = request.headers
        date = headers.get("Date", "")
        content_type = headers.get("Content-Type", "")
        md5 = headers.get("Content-MD5", "")
        signature = headers.get("X-Signature", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise AmojoError(400, "Content-Type must be application/json", "reason:content-type")
        if not date or not md5 or not signature:
            raise AmojoError(403, "missing Date, Content-MD5 or X-Signature", "reason:headers")
        try:
            sent_at = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            raise AmojoError(403, "malformed Date header", "reason:date") from None
        if abs(self.now() - sent_at) > SIGNATURE_TTL:
            raise AmojoError(
                403, "signature expired (Date is off by more than 15 min)", "reason:date"
            )
        if md5 != hashlib.md5(body).hexdigest():
            raise AmojoError(403, "Content-MD5 does not match the body", "reason:md5")
        to_sign = "\n".join([request.method.upper(), md5, content_type, date, request.path])
        expected = hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise AmojoError(403, "invalid signature", "reason:signature")

    async def _guard(self, request: web.Request) -> tuple[bytes, Any]:
        body = await request.read()
        record = RecordedRequest(
            request.method, request.path, dict(request.headers), body, at=time.monotonic()
        )
        self.requests.append(record)
        if self.down_status is not None:
            raise AmojoError(self.down_status, "service unavailable", "Down")
        if self.response_delay and self.delay_before:
            await asyncio.sleep(self.response_delay)
        try:
            self._verify(request, body)
        except AmojoError as error:
            self.rejected.append((request.path, error.error_type.removeprefix("reason:")))
            error.error_type = "Forbidden" if error.status == 403 else "BadRequest"
            raise
        try:
            data = json.loads(body) if body else None
        except ValueError:
            raise _bad("body is not valid JSON") from None
        return body, data

    def _take_failure(self, path: str, event: str | None) -> None:
        for failure in self._failures:
            if failure.times <= 0:
                continue
            if path.endswith(failure.target) or (event is not None and event == failure.target):
                failure.times -= 1
                if failure.body is not None or failure.retry_after is not None:
                    body = failure.body
                    if body is None:
                        body = {
                            "error_code": failure.status,
                            "error_type": "Injected",
                            "error_description": "injected failure",
                        }
                    raise _InjectedError(failure.status, body, failure.retry_after)
                raise AmojoError(failure.status, "injected failure", "Injected")

    async def _answer(
        self, request: web.Request, handler: Callable[[Any], Any], scoped: bool = True
    ) -> web.StreamResponse:
        status = 0
        try:
            try:
                _, data = await self._guard(request)
                if scoped:
                    self._check_scope(request.match_info["scope_id"])
                if not isinstance(data, dict):
                    raise _bad("body must be a JSON object")
                event = data.get("event_type") if isinstance(data.get("event_type"), str) else None
                self._take_failure(request.path, event)
                result = await handler(data)
            except _InjectedError as injected:
                response: web.StreamResponse = web.json_response(
                    injected.body, status=injected.status
                )
                if injected.retry_after is not None:
                    response.headers["Retry-After"] = str(injected.retry_after)
            except AmojoError as error:
                response = error.response()
            else:
                if isinstance(result, web.StreamResponse):
                    response = result
                elif result is None:
                    response = web.Response(status=200)
                else:
                    response = web.json_response(result)
            status = response.status
            # amojo's own clock, which a bridge whose clock is off may follow (spec §2.1).
            response.headers["Date"] = format_datetime(
                datetime.fromtimestamp(self.now(), UTC), usegmt=True
            )
            if self.response_delay and not self.delay_before:
                await asyncio.sleep(self.response_delay)
            return response
        finally:
            if self.requests:
                self.requests[-1].status = status
            await self._notify()

    def _check_scope(self, scope_id: str) -> None:
        if scope_id != self.scope_id or (self.require_connect and not self.connected):
            raise AmojoError(404, f"scope {scope_id} not found")

    # ---- endpoints ------------------------------------------------------------------------

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]

        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            if channel_id != self.channel_id:
                raise AmojoError(404, "channel not found")
            account_id = _require_str(data, "account_id", "")
            if account_id != self.account_id:
                raise _bad("account_id: account is not allowed for this channel")
            if data.get("hook_api_version") != "v2":
                raise _bad("hook_api_version: this channel has a hook URL for v2 only")
            title = data.get("title", "ChatIntegration")
            if not isinstance(title, str):
                raise _bad("title: must be a string")
            disabled = data.get("is_time_window_disabled", False)
            if not isinstance(disabled, bool):
                raise _bad("is_time_window_disabled: must be a boolean")
            self.connects.append(data)
            self.connected = True
            return {
                "account_id": account_id,
                "scope_id": self.scope_id,
                "title": title,
                "hook_api_version": "v2",
                "is_time_window_disabled": disabled,
            }

        return await self._answer(request, handle, scoped=False)

    async def _disconnect(self, request: web.Request) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]

        async def handle(data: dict[str, Any]) -> None:
            if channel_id != self.channel_id:
                raise AmojoError(404, "channel not found")
            if _require_str(data, "account_id", "") != self.account_id:
                raise _bad("account_id: unknown account")
            self.disconnects.append(data)
            self.connected = False

        return await self._answer(request, handle, scoped=False)

    async def _send(self, request: web.Request) -> web.StreamResponse:
        async def handle(data: dict[str, Any]) -> dict[str, Any] | None:
            payload = data.get("payload")
            if not isinstance(payload, dict):
                raise _bad("payload: must be an object")
            msgid = payload.get("msgid")
            if isinstance(msgid, str):
                self.attempts[msgid] += 1
            event = data.get("event_type")
            if event == "new_message":
                return self._new_message(payload)
            if event == "edit_message":
                self._edit_message(payload)
                return None
            raise _bad("event_type: must be new_message or edit_message")

        return await self._answer(request, handle)

    def _validate_message(self, message: Any, *, edit: bool) -> None:
        if not isinstance(message, dict):
            raise _bad("payload.message: must be an object")
        msg_type = message.get("type")
        if msg_type not in INBOUND_TYPES:
            raise _bad(f"payload.message.type: unsupported type {msg_type!r}")
        where = "payload.message."
        if "text" in message and not isinstance(message["text"], str):
            raise _bad(f"{where}text: must be a string")
        if msg_type == "text":
            _require_str(message, "text", where)
        if msg_type in MEDIA_TYPES and not (edit and "media" not in message):
            media = _require_str(message, "media", where)
            if not media.startswith(("http://", "https://")):
                raise _bad(f"{where}media: must be a downloadable URL")
            if msg_type in SIZED_TYPES:
                _require_str(message, "file_name", where)
                if "file_size" not in message:
                    raise _bad(f"{where}file_size: required for {msg_type}")
        for key in ("file_size", "media_duration"):
            _optional_int(message, key, where)
        if msg_type == "location":
            location = message.get("location")
            if not isinstance(location, dict) or not all(
                _is_number(location.get(k)) for k in ("lon", "lat")
            ):
                raise _bad(f"{where}location: {{lon: float, lat: float}} required")
        if msg_type == "contact":
            contact = message.get("contact")
            if not isinstance(contact, dict):
                raise _bad(f"{where}contact: {{name, phone}} required")
            _require_str(contact, "name", f"{where}contact.")
            _require_str(contact, "phone", f"{where}contact.")

    def _validate_person(self, person: Any, where: str, *, name_required: bool) -> None:
        if not isinstance(person, dict):
            raise _bad(f"{where}: must be an object")
        _require_str(person, "id", f"{where}.")
        if name_required or "name" in person:
            _require_str(person, "name", f"{where}.")
        profile = person.get("profile")
        if profile is not None and not isinstance(profile, dict):
            raise _bad(f"{where}.profile: must be an object")

    def _new_message(self, payload: dict[str, Any]) -> dict[str, Any]:
        msgid = _require_str(payload, "msgid", "payload.")
        conversation_id = _require_str(payload, "conversation_id", "payload.")
        for key in ("timestamp", "msec_timestamp"):
            _optional_int(payload, key, "payload.")
        if "silent" in payload and not isinstance(payload["silent"], bool):
            raise _bad("payload.silent: must be a boolean")
        is_new = conversation_id not in self.conversations and not any(
            m["conversation_id"] == conversation_id for m in self.messages
        )
        self._validate_person(payload.get("sender"), "payload.sender", name_required=is_new)
        receiver = payload.get("receiver")
        if receiver is not None:
            self._validate_person(receiver, "payload.receiver", name_required=True)
        self._validate_message(payload.get("message"), edit=False)
        _validate_source(payload.get("source"))
        if self.message_by_msgid(msgid) is not None:
            raise _bad(f"payload.msgid: message with msgid {msgid} already exists")
        ref = payload.get("conversation_ref_id")
        if isinstance(ref, str):
            self.conversations[conversation_id] = ref
        amo_conversation = self._amo_conversation(conversation_id)
        amo_id = str(uuid.uuid4())
        stored = {**payload, "amo_id": amo_id, "amo_conversation_id": amo_conversation}
        if self.crm is not None:
            sender_info = payload.get("sender") or {}
            profile = sender_info.get("profile") if isinstance(sender_info, dict) else None
            phone = profile.get("phone", "") if isinstance(profile, dict) else ""
            self.crm.chat_seen(amo_conversation, str(sender_info.get("name") or "Client"), phone)
        self.messages.append(stored)
        now = self.now()
        self.history[amo_conversation].append(
            {
                "timestamp": int(now),
                "msec_timestamp": int(now * 1000),
                "sender": {"id": amo_id, "client_id": payload["sender"]["id"], "name": "Client"},
                "message": {"id": amo_id, "client_id": msgid, **payload["message"]},
            }
        )
        sender = payload["sender"]
        self._amo_user(str(sender["id"]))
        if self.fetch_media:
            self._start_media_fetch(stored)
        return {
            "new_message": {
                "conversation_id": conversation_id,
                "sender_id": sender["id"],
                "receiver_id": receiver["id"] if isinstance(receiver, dict) else None,
                "msgid": amo_id,
                "ref_id": msgid,
            }
        }

    def _edit_message(self, payload: dict[str, Any]) -> None:
        msgid, amo_id = payload.get("msgid"), payload.get("id")
        if not isinstance(msgid, str) and not isinstance(amo_id, str):
            raise _bad("payload.msgid or payload.id is required")
        _require_str(payload, "conversation_id", "payload.")
        stored = next(
            (
                m
                for m in self.messages
                if (isinstance(amo_id, str) and m["amo_id"] == amo_id)
                or (not isinstance(amo_id, str) and m["msgid"] == msgid)
            ),
            None,
        )
        if stored is None:
            raise AmojoError(404, "message not found")
        if stored["conversation_id"] != payload["conversation_id"]:
            raise _bad("payload.conversation_id: does not match the message")
        self._validate_message(payload.get("message"), edit=True)
        stored["message"] = {**stored["message"], **payload["message"]}
        if isinstance(amo_id, str) and isinstance(msgid, str):
            stored["msgid"] = msgid
        self.edits.append({**payload, "amo_id": stored["amo_id"]})

    async def _delivery_status(self, request: web.Request) -> web.StreamResponse:
        amo_msgid = request.match_info["msgid"]

        async def handle(data: dict[str, Any]) -> None:
            self.attempts[amo_msgid] += 1
            if "delivery_status" in data:
                status = data["delivery_status"]
                if "msgid" in data and data["msgid"] != amo_msgid:
                    raise _bad("msgid: does not match the path")
            elif "status_code" in data:
                status = data["status_code"]
            else:
                raise _bad("delivery_status or status_code is required")
            if not isinstance(status, int) or isinstance(status, bool):
                raise _bad("delivery_status: must be an integer")
            if status not in DELIVERY_STATUSES:
                raise _bad(f"delivery_status: unknown status {status}")
            _optional_int(data, "error_code", "")
            error_code, error = data.get("error_code"), data.get("error")
            if status == -1:
                if error_code not in DELIVERY_ERRORS:
                    raise _bad("error_code: one of 901..905 is required for status -1")
                if error_code == 905 and (not isinstance(error, str) or not error):
                    raise _bad("error: a text is required for error_code 905")
            if error is not None and not isinstance(error, str):
                raise _bad("error: must be a string")
            if amo_msgid not in self.hook_message_ids:
                raise AmojoError(404, "message not found")
            self.statuses.append(
                {
                    "amo_msgid": amo_msgid,
                    "status": status,
                    "error_code": error_code,
                    "error": error,
                    "raw": data,
                }
            )

        return await self._answer(request, handle)

    async def _react(self, request: web.Request) -> web.StreamResponse:
        async def handle(data: dict[str, Any]) -> None:
            if not isinstance(data.get("conversation_id"), str) and not isinstance(
                data.get("conversation_ref_id"), str
            ):
                raise _bad("conversation_id or conversation_ref_id is required")
            msgid, amo_id = data.get("msgid"), data.get("id")
            if not isinstance(msgid, str) and not isinstance(amo_id, str):
                raise _bad("msgid or id is required")
            user = data.get("user")
            if not isinstance(user, dict) or not isinstance(user.get("id"), str):
                raise _bad("user.id is required")
            if data.get("type") not in ("react", "unreact"):
                raise _bad("type: must be react or unreact")
            if "emoji" in data and not isinstance(data["emoji"], str):
                raise _bad("emoji: must be a string")
            known = amo_id in self.hook_message_ids or any(
                m["msgid"] == msgid or m["amo_id"] == amo_id for m in self.messages
            )
            if not known:
                raise AmojoError(404, "message not found")
            self.reactions.append(data)

        return await self._answer(request, handle)

    async def _typing(self, request: web.Request) -> web.StreamResponse:
        async def handle(data: dict[str, Any]) -> web.Response:
            _require_str(data, "conversation_id", "")
            sender = data.get("sender")
            if not isinstance(sender, dict) or not isinstance(sender.get("id"), str):
                raise _bad("sender.id is required")
            _optional_int(data, "duration_ms", "")
            self.typings.append(data)
            return web.Response(status=204)

        return await self._answer(request, handle)

    async def _create_chat(self, request: web.Request) -> web.StreamResponse:
        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            conversation_id = _require_str(data, "conversation_id", "")
            user = data.get("user")
            self._validate_person(user, "user", name_required=True)
            assert isinstance(user, dict)
            chat = self.chats.get(conversation_id)
            if chat is None:
                profile = user.get("profile") or {}
                chat = {
                    "id": self._amo_conversation(conversation_id),
                    "user": {
                        "id": self._amo_user(user["id"]),
                        "client_id": user["id"],
                        "name": user["name"],
                        "avatar": user.get("avatar", ""),
                        "phone": profile.get("phone", ""),
                        "email": profile.get("email", ""),
                    },
                }
                self.chats[conversation_id] = chat
            return chat

        return await self._answer(request, handle)

    async def _history(self, request: web.Request) -> web.StreamResponse:
        """GET …/chats/{chat_id}/history?offset&limit (§5.3): newest first, ≤50 a page."""
        status = 0
        try:
            try:
                await self._guard(request)
                self._check_scope(request.match_info["scope_id"])
                self._take_failure(request.path, None)
                try:
                    offset = int(request.query.get("offset", "0"))
                    limit = int(request.query.get("limit", "50"))
                except ValueError:
                    raise _bad("offset and limit must be integers") from None
                if not 0 < limit <= 50 or offset < 0:
                    raise _bad("limit must be 1..50, offset ≥ 0")
                chat_id = request.match_info["chat_id"]
                self.history_reads.append((chat_id, offset, limit))
                newest_first = list(reversed(self.history.get(chat_id, [])))
                page = newest_first[offset : offset + limit]
                if not page:
                    response: web.StreamResponse = web.Response(status=204)
                else:
                    response = web.json_response({"messages": page})
            except _InjectedError as injected:
                response = web.json_response(injected.body, status=injected.status)
                if injected.retry_after is not None:
                    response.headers["Retry-After"] = str(injected.retry_after)
            except AmojoError as error:
                response = error.response()
            status = response.status
            response.headers["Date"] = format_datetime(
                datetime.fromtimestamp(self.now(), UTC), usegmt=True
            )
            return response
        finally:
            if self.requests:
                self.requests[-1].status = status
            await self._notify()

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name in self._redirects:
            raise web.HTTPFound(self._redirects[name])
        if name in self._dripping:
            content_type, every = self._dripping[name]
            response = web.StreamResponse(headers={"Content-Type": content_type})
            await response.prepare(request)
            while True:
                await response.write(b"x")
                await asyncio.sleep(every)
        if name not in self._media:
            return web.Response(status=404)
        self.media_downloads.append(name)
        await self._notify()
        content_type, content = self._media[name]
        return web.Response(body=content, content_type=content_type)

    # ---- amo downloading customer media ---------------------------------------------------

    def _start_media_fetch(self, stored: dict[str, Any]) -> None:
        message = stored.get("message", {})
        url = message.get("media")
        if message.get("type") not in MEDIA_TYPES or not isinstance(url, str):
            return
        task = asyncio.get_running_loop().create_task(self._fetch_media(stored, url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_media(self, stored: dict[str, Any], url: str) -> None:
        result: dict[str, Any] = {"msgid": stored["msgid"], "url": url, "status": 0}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
            ):
                result["status"] = response.status
                result["content_type"] = response.headers.get("Content-Type", "")
                content = await response.read()
                result["content"] = content
                result["size"] = len(content)
                result["size_matches"] = len(content) == stored["message"].get("file_size")
        except (aiohttp.ClientError, TimeoutError) as error:
            result["error"] = repr(error)
        self.media_fetches.append(result)
        await self._notify()


class _InjectedError(Exception):
    def __init__(self, status: int, body: Any, retry_after: int | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.retry_after = retry_after
