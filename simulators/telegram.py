"""Fake Telegram Bot API server (https://core.telegram.org/bots/api) for end-to-end tests."""

import asyncio
import contextlib
import functools
import html
import itertools
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from simulators.base import FakeServer

BOT_USER: dict[str, Any] = {
    "id": 42,
    "is_bot": True,
    "first_name": "Bridge",
    "username": "bridge_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_DOWNLOAD = 20 * 1024 * 1024
MAX_UPLOAD = 50 * 1024 * 1024
# https://core.telegram.org/bots/api#reactiontypeemoji: the only emoji a bot may set.
ALLOWED_REACTIONS = frozenset(
    {
        "👍",
        "👎",
        "❤",
        "🔥",
        "🥰",
        "👏",
        "😁",
        "🤔",
        "🤯",
        "😱",
        "🤬",
        "😢",
        "🎉",
        "🤩",
        "🤮",
        "💩",
        "🙏",
        "👌",
        "🕊",
        "🤡",
        "🥱",
        "🥴",
        "😍",
        "🐳",
        "❤‍🔥",
        "🌚",
        "🌭",
        "💯",
        "🤣",
        "⚡",
        "🍌",
        "🏆",
        "💔",
        "🤨",
        "😐",
        "🍓",
        "🍾",
        "💋",
        "🖕",
        "😈",
        "😴",
        "😭",
        "🤓",
        "👻",
        "👨‍💻",
        "👀",
        "🎃",
        "🙈",
        "😇",
        "😨",
        "🤝",
        "✍",
        "🤗",
        "🫡",
        "🎅",
        "🎄",
        "☃",
        "💅",
        "🤪",
        "🗿",
        "🆒",
        "💘",
        "🙉",
        "🦄",
        "😘",
        "💊",
        "🙊",
        "😎",
        "👾",
        "🤷‍♂",
        "🤷",
        "🤷‍♀",
        "😡",
    }
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# Updates Telegram leaves out unless allowed_updates names them explicitly.
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
MEDIA_FIELDS = {
    "sendphoto": "photo",
    "senddocument": "document",
    "sendvideo": "video",
    "sendvoice": "voice",
    "sendaudio": "audio",
    "sendsticker": "sticker",
    "sendanimation": "animation",
    "sendvideonote": "video_note",
}
STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "emoji",
        "title",
        "description",
        "file_id",
        "business_connection_id",
        "message_effect_id",
        "question",
        "explanation",
        "address",
        "first_name",
        "last_name",
        "phone_number",
        "vcard",
        "performer",
        "file_name",
        "action",
        "offset_text",
    }
)
HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
MARKDOWN_V2_RESERVED = set(">#+-=|{}.!")
DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
    500: "Internal Server Error",
    502: "Internal Server Error",
}


class ApiError(Exception):
    """A Bot API error answer."""

    def __init__(
        self,
        status: int,
        description: str,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def body(self) -> dict[str, Any]:
        """The JSON body Telegram sends for this error."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        if self.migrate_to_chat_id is not None:
            body["parameters"] = {"migrate_to_chat_id": self.migrate_to_chat_id}
        return body


def bad_request(description: str) -> ApiError:
    """A 400 with Telegram's "Bad Request: ..." description."""
    return ApiError(400, f"Bad Request: {description}")


@dataclass
class RecordedCall:
    """One Bot API request as the fake received it."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    failed: bool = False
    status: int = 200
    result: Any = None
    at: float = 0.0

    @property
    def chat_id(self) -> Any:
        """The chat_id parameter, if any."""
        return self.params.get("chat_id")


@dataclass
class _Failure:
    method: str
    status: int
    description: str
    retry_after: int | None
    times: int
    chat_id: int | str | None
    after: int = 0  # calls that pass before the failures start


@dataclass
class _File:
    file_id: str
    file_unique_id: str
    content: bytes
    file_size: int
    file_path: str


def _coerce(key: str, value: str) -> Any:
    if key in STRING_PARAMS:
        return value
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if value in ("true", "false"):
        return value == "true"
    return value


def visible_length(text: str, parse_mode: str | None) -> int:
    """Length of the text after entity parsing, validating markup like Telegram does."""
    if parse_mode is None or parse_mode == "":
        return len(text)
    mode = parse_mode.lower()
    if mode == "html":
        return len(_strip_html(text))
    if mode == "markdownv2":
        return len(_strip_markdown_v2(text))
    if mode == "markdown":
        return len(text)
    raise bad_request(f"unsupported parse_mode {parse_mode!r}")


_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(\s[^<>]*)?>")


def _strip_html(text: str) -> str:
    visible: list[str] = []
    stack: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == ">":
            raise bad_request(
                "can't parse entities: Unsupported start tag "
                f'"" at byte offset {len(text[:pos].encode())}'
            )
        if char != "<":
            visible.append(char)
            pos += 1
            continue
        match = _TAG.match(text, pos)
        offset = len(text[:pos].encode())
        if match is None:
            raise bad_request(
                f'can\'t parse entities: Unsupported start tag "" at byte offset {offset}'
            )
        closing, name = match.group(1), match.group(2).lower()
        if name not in HTML_TAGS:
            raise bad_request(
                f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {offset}'
            )
        if closing:
            if not stack or stack[-1] != name:
                raise bad_request(
                    f"can't parse entities: Unexpected end tag at byte offset {offset}"
                )
            stack.pop()
        else:
            stack.append(name)
        pos = match.end()
    if stack:
        raise bad_request(
            f"can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1]}\""
        )
    return html.unescape("".join(visible))


def _strip_markdown_v2(text: str) -> str:
    visible: list[str] = []
    in_code = False
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            visible.append(text[pos + 1])
            pos += 2
            continue
        if char == "`":
            in_code = not in_code
        elif not in_code and char in MARKDOWN_V2_RESERVED:
            raise bad_request(
                f"can't parse entities: Character '{char}' is reserved and must be escaped "
                "with the preceding '\\'"
            )
        elif in_code or char not in "_*[]()~|":
            visible.append(char)
        pos += 1
    return "".join(visible)


def validate_reply_markup(markup: Any) -> dict[str, Any] | None:
    """Check a reply_markup like Telegram and return what a Message echoes back."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request(
                'can\'t parse inline keyboard button: field "inline_keyboard" '
                "must be an Array of Arrays"
            )
        for row in rows:
            for button in row:
                _validate_inline_button(button)
        return markup
    if "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not rows:
            raise bad_request("keyboard must be non-empty")
        for row in rows:
            for button in row:
                text = button if isinstance(button, str) else button.get("text")
                if not isinstance(text, str) or not text:
                    raise bad_request("can't parse keyboard button: Text must be non-empty")
        return None
    if markup.get("remove_keyboard") is True or markup.get("force_reply") is True:
        return None
    raise bad_request("can't parse reply keyboard markup JSON object")


def _validate_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise bad_request("can't parse inline keyboard button: Text must be a String")
    if not button["text"]:
        raise bad_request("text buttons are unallowed in the inline keyboard")
    kinds = [key for key in button if key != "text"]
    if len(kinds) != 1:
        raise bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in button:
        url = button["url"]
        if not isinstance(url, str) or not re.match(r"^(https?|tg)://\S+$", url):
            raise bad_request(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")


class FakeTelegram(FakeServer):
    """A Bot API server: records calls, long-polls pushed updates, serves files.

    It serves one bot per token: `add_bot` makes another bot on the same server, with its own
    updates, messages, files and calls (as Telegram keeps them apart), and `revoke` makes a
    token rejected from then on (401), as @BotFather's "revoke" does.
    """

    def __init__(
        self,
        token: str,
        *,
        bot_user: dict[str, Any] | None = None,
        served_by: "FakeTelegram | None" = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.bot_user = dict(bot_user or {**BOT_USER, "id": int(token.split(":", 1)[0])})
        self.revoked = False
        self._served_by = served_by
        self._bots: dict[str, FakeTelegram] = {token: self}
        self.calls: list[RecordedCall] = []
        self.updates: list[dict[str, Any]] = []
        self.confirmed_offset = 0
        self.allowed_updates: list[str] | None = None
        self.skipped_updates: list[dict[str, Any]] = []
        self.webhook_url = ""
        self.sent: dict[tuple[int | str, int], dict[str, Any]] = {}
        self.known_messages: set[tuple[int | str, int]] = set()
        self.reactions: dict[tuple[int | str, int], list[str]] = {}
        self.blocked_chats: set[int | str] = set()
        # Groups: where the bot was removed, which became supergroups, topics that are closed.
        self.kicked_from: set[int] = set()
        self.migrated_chats: dict[int, int] = {}
        self.closed_topics: set[tuple[int, int]] = set()
        self.left_chats: list[int] = []
        self.downloads: list[str] = []
        self.newer_fields: dict[str, Any] = {}
        self.down = False
        self._next_update_id = 1
        self._next_message_id: dict[int | str, int] = defaultdict(lambda: 1000)
        self._failures: list[_Failure] = []
        self._files: dict[str, _File] = {}
        self._file_paths: dict[str, _File] = {}
        self._file_counter = itertools.count(1)
        self._poll_generation = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Telegram Business: connections by id, and when each chat's customer last wrote.
        self.business: dict[str, dict[str, Any]] = {}
        self.business_inbound: dict[tuple[str, int], float] = {}
        self.business_read: list[tuple[str, int, int]] = []
        self._business_message_ids: dict[tuple[str, int], int] = defaultdict(lambda: 5000)
        if served_by is None:
            self.app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
            self.app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)

    @property
    def url(self) -> str:
        """Base URL (shared by every bot of the server)."""
        return self._served_by.url if self._served_by is not None else super().url

    async def start(self) -> None:
        """Start listening (a bot added with `add_bot` is served by its server)."""
        if self._served_by is None:
            await super().start()

    async def close(self) -> None:
        """Stop the server; every bot's long polls end."""
        for other in self._bots.values():
            if other is not self:
                other._closing = True
                await other._notify()
        await super().close()

    def add_bot(self, token: str, *, username: str, first_name: str = "Bot") -> "FakeTelegram":
        """Serve one more bot (its id is the token's part before the colon)."""
        user = {**BOT_USER, "id": int(token.split(":", 1)[0]), "username": username}
        other = FakeTelegram(token, bot_user={**user, "first_name": first_name}, served_by=self)
        self._bots[token] = other
        return other

    def bot(self, token: str) -> "FakeTelegram":
        """The fake of one bot this server serves (by its token)."""
        return self._bots[token]

    def revoke(self) -> None:
        """From now on every call with this bot's token answers 401 Unauthorized."""
        self.revoked = True
        self._schedule_notify()

    # ---- test API -------------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update (without update_id) for getUpdates; returns its update_id."""
        update_id = self._next_update_id
        self._next_update_id += 1
        stored = {"update_id": update_id, **update}
        self.updates.append(stored)
        for kind in ("message", "edited_message"):
            message = update.get(kind)
            chat = message.get("chat") if isinstance(message, dict) else None
            if isinstance(chat, dict) and isinstance(message, dict):
                chat_id, message_id = chat.get("id"), message.get("message_id")
                if isinstance(chat_id, int | str) and isinstance(message_id, int):
                    self.known_messages.add((chat_id, message_id))
        self._schedule_notify()
        return update_id

    # ---- Telegram Business ------------------------------------------------------------------

    def connect_business(
        self,
        connection_id: str,
        owner: dict[str, Any],
        *,
        can_reply: bool = True,
        can_read: bool = True,
        enabled: bool = True,
    ) -> int:
        """The owner connects (or re-configures, or with enabled=False removes) this bot in
        their account's Business settings: a `business_connection` update."""
        connection = {
            "id": connection_id,
            "user": owner,
            "user_chat_id": owner["id"],
            "date": int(time.time()),
            "is_enabled": enabled,
            "rights": {"can_reply": can_reply, "can_read_messages": can_read},
        }
        self.business[connection_id] = connection
        return self.push_update({"business_connection": connection})

    def business_message(
        self,
        connection_id: str,
        customer: dict[str, Any],
        *,
        from_owner: bool = False,
        date: int | None = None,
        message_id: int | None = None,
        edited: bool = False,
        **fields: Any,
    ) -> tuple[int, int]:
        """A message in the account's chat with `customer`, by the customer or typed by the
        owner: a `business_message` (or edited) update. Returns (update_id, message_id)."""
        connection = self.business[connection_id]
        key = (connection_id, customer["id"])
        if message_id is None:
            self._business_message_ids[key] += 1
            message_id = self._business_message_ids[key]
        moment = date if date is not None else int(time.time())
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": connection["user"] if from_owner else customer,
            "chat": {
                "id": customer["id"],
                "type": "private",
                **{
                    k: customer[k] for k in ("first_name", "last_name", "username") if k in customer
                },
            },
            "date": moment,
            "business_connection_id": connection_id,
        }
        message.update({k: v for k, v in fields.items() if v is not None})
        if edited:
            message["edit_date"] = moment + 1
        elif not from_owner:
            self.business_inbound[key] = float(moment)
        self.known_messages.add((customer["id"], message_id))
        kind = "edited_business_message" if edited else "business_message"
        return self.push_update({kind: message}), message_id

    def delete_business_messages(
        self, connection_id: str, customer: dict[str, Any], message_ids: list[int]
    ) -> int:
        """Messages deleted in the account's chat: a `deleted_business_messages` update."""
        chat = {"id": customer["id"], "type": "private", "first_name": customer["first_name"]}
        return self.push_update(
            {
                "deleted_business_messages": {
                    "business_connection_id": connection_id,
                    "chat": chat,
                    "message_ids": message_ids,
                }
            }
        )

    def business_sends(self, connection_id: str) -> list[RecordedCall]:
        """Successful sends made on behalf of a business account."""
        return [
            c
            for c in self.sent_messages()
            if c.params.get("business_connection_id") == connection_id
        ]

    def _check_business(self, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """What Telegram checks of a call made on behalf of a business account."""
        connection_id = params.get("business_connection_id")
        if connection_id is None:
            return None
        connection = self.business.get(str(connection_id))
        if connection is None:
            raise bad_request("BUSINESS_CONNECTION_INVALID")
        if not connection["is_enabled"]:
            raise bad_request("BUSINESS_CONNECTION_NOT_ALLOWED")
        rights = connection["rights"]
        if method == "readbusinessmessage":
            if not rights.get("can_read_messages"):
                raise ApiError(403, "Forbidden: BOT_ACCESS_FORBIDDEN")
            return connection
        if method.startswith("send") and method != "sendchataction":
            if not rights.get("can_reply"):
                raise ApiError(403, "Forbidden: BOT_ACCESS_FORBIDDEN")
            chat = params.get("chat_id")
            last = self.business_inbound.get((str(connection_id), int(chat or 0)))
            if last is None or time.time() - last > 24 * 3600:
                raise ApiError(403, "Forbidden: the chat had no incoming messages in 24 hours")
            markup = params.get("reply_markup")
            if isinstance(markup, dict) and "inline_keyboard" not in markup:
                raise bad_request("reply keyboards are not supported for business messages")
        return connection

    def _on_behalf(self, connection: dict[str, Any], sent: Any) -> None:
        """A message sent for the account is the owner's, sent by this bot; Telegram also
        shows it to the bot as a `business_message` from the owner (echoed here)."""
        for message in sent if isinstance(sent, list) else [sent]:
            if not isinstance(message, dict) or "message_id" not in message:
                continue
            message["from"] = connection["user"]
            message["sender_business_bot"] = {
                k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")
            }
            message["business_connection_id"] = connection["id"]
            self.push_update({"business_message": dict(message)})

    async def _read_business_message(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        self.business_read.append(
            (
                str(params["business_connection_id"]),
                int(params["chat_id"]),
                int(params["message_id"]),
            )
        )
        return True

    async def _get_business_connection(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        connection = self.business.get(str(params.get("business_connection_id")))
        if connection is None:
            raise bad_request("BUSINESS_CONNECTION_INVALID")
        return connection

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by an offset."""
        return [u for u in self.updates if u["update_id"] >= self.confirmed_offset]

    def fail(
        self,
        method: str,
        *,
        status: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: int | str | None = None,
        after: int = 0,
    ) -> None:
        """Answer `times` calls of method (optionally only for chat_id) with an error.

        The failures start after `after` calls have passed.
        """
        if description is None:
            if status == 429:
                description = f"Too Many Requests: retry after {retry_after or 1}"
                retry_after = retry_after or 1
            else:
                description = DEFAULT_DESCRIPTIONS.get(status, "Internal Server Error")
        self._failures.append(
            _Failure(method.lower(), status, description, retry_after, times, chat_id, after)
        )

    def clear_failures(self) -> None:
        """Forget every failure set with `fail` that has not happened yet."""
        self._failures.clear()

    def set_down(self, down: bool) -> None:
        """While down, every method (getUpdates included) answers 502."""
        self.down = down
        self._schedule_notify()

    def block(self, chat_id: int | str) -> None:
        """From now on every call for chat_id fails with 403 "bot was blocked by the user"."""
        self.blocked_chats.add(chat_id)

    def add_file(
        self, content: bytes, *, file_size: int | None = None, file_path: str | None = None
    ) -> tuple[str, str]:
        """Register a downloadable file; returns (file_id, file_unique_id)."""
        stored = self._register_file(content, "documents", "bin", file_size, file_path)
        return stored.file_id, stored.file_unique_id

    def calls_of(self, method: str, *, ok_only: bool = False) -> list[RecordedCall]:
        """Recorded calls of one method (case-insensitive)."""
        name = method.lower()
        return [c for c in self.calls if c.method.lower() == name and not (ok_only and c.failed)]

    def sent_messages(self, chat_id: int | str | None = None) -> list[RecordedCall]:
        """Successful send*/copy*/forward* calls, optionally for one chat."""
        return [
            c
            for c in self.calls
            if not c.failed
            and c.method.lower().startswith(("send", "copy", "forward"))
            and c.method.lower() != "sendchataction"
            and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    def max_rate(self, method_prefix: str = "send", window: float = 1.0) -> int:
        """Most successful calls of method_prefix* within any sliding window (all chats)."""
        return _max_in_window([c.at for c in self._rated(method_prefix)], window)

    def max_rate_per_chat(self, method_prefix: str = "send", window: float = 1.0) -> int:
        """Most successful calls of method_prefix* to one chat within any sliding window."""
        per_chat: dict[Any, list[float]] = defaultdict(list)
        for call in self._rated(method_prefix):
            per_chat[call.params.get("chat_id")].append(call.at)
        return max((_max_in_window(times, window) for times in per_chat.values()), default=0)

    def describe(self) -> str:
        """Summary for timeout messages."""
        recent = ", ".join(
            f"{c.method}({c.params.get('chat_id', '')}){'!' + str(c.status) if c.failed else ''}"
            for c in self.calls[-15:]
            if c.method.lower() != "getupdates"
        )
        pending = len(self.pending_updates())
        return f"{len(self.calls)} calls, {pending} pending updates; last: {recent}"

    def _rated(self, prefix: str) -> list[RecordedCall]:
        prefix = prefix.lower()
        return [
            c
            for c in self.calls
            if not c.failed
            and c.method.lower().startswith(prefix)
            and c.method.lower() != "sendchataction"
        ]

    def _schedule_notify(self) -> None:
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(self._notify())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _register_file(
        self,
        content: bytes,
        folder: str,
        ext: str,
        file_size: int | None = None,
        file_path: str | None = None,
    ) -> _File:
        number = next(self._file_counter)
        stored = _File(
            file_id=f"AgAC{number:06d}fake{folder[:3]}",
            file_unique_id=f"AQAD{number:06d}",
            content=content,
            file_size=len(content) if file_size is None else file_size,
            file_path=file_path or f"{folder}/file_{number}.{ext}",
        )
        self._files[stored.file_id] = stored
        self._file_paths[stored.file_path] = stored
        return stored

    # ---- HTTP -----------------------------------------------------------------------------

    def _bot_for(self, token: str) -> "FakeTelegram | None":
        served = self._bots.get(token)
        if served is None or served.revoked or served.token != token:
            return None
        return served

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        served = self._bot_for(request.match_info["token"])
        if served is None or served is self:
            return await self._serve_file(request)
        return await served._serve_file(request)

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        stored = self._file_paths.get(path)
        if request.match_info["token"] != self.token or self.revoked or stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        self.downloads.append(path)
        await self._notify()
        return web.Response(body=stored.content, content_type="application/octet-stream")

    async def _handle_method(self, request: web.Request) -> web.StreamResponse:
        served = self._bot_for(request.match_info["token"])
        if served is None:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        return await served._serve_method(request)

    async def _serve_method(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params, files = await self._parse(request)
        call = RecordedCall(method=method, params=params, files=files, at=time.monotonic())
        try:
            result = await self._dispatch(method.lower(), params, files)
        except ApiError as error:
            call.failed, call.status, call.result = True, error.status, error.body()
            self.calls.append(call)
            await self._notify()
            return web.json_response(error.body(), status=error.status)
        call.result = result
        self.calls.append(call)
        await self._notify()
        return web.json_response({"ok": True, "result": result})

    async def _parse(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        params: dict[str, Any] = {k: _coerce(k, v) for k, v in request.query.items()}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json" and request.can_read_body:
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                    params.setdefault(f"_filename_{key}", value.filename)
                else:
                    params[key] = _coerce(key, str(value))
        for key, value in list(params.items()):
            if isinstance(value, str) and value.startswith("attach://"):
                attached_name = value.removeprefix("attach://")
                attached = files.get(attached_name)
                if attached is not None:
                    files[key] = attached
                    filename = params.get(f"_filename_{attached_name}")
                    if filename is not None:
                        params.setdefault(f"_filename_{key}", filename)
        return params, files

    async def _dispatch(self, method: str, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if self.down:
            raise ApiError(502, DEFAULT_DESCRIPTIONS[502])
        self._take_failure(method, params.get("chat_id"))
        handler = self._handlers().get(method)
        if handler is None:
            raise ApiError(404, "Not Found")
        chat_id = params.get("chat_id")
        connection = self._check_business(method, params)
        if connection is None and chat_id is not None and chat_id in self.blocked_chats:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        self._check_group(method, params)
        if connection is not None and method == "setmessagereaction":
            raise bad_request("business_connection_id is not a parameter of setMessageReaction")
        result = await handler(params, files)
        if connection is not None and method.startswith("send") and method != "sendchataction":
            self._on_behalf(connection, result)
        return result

    def _check_group(self, method: str, params: dict[str, Any]) -> None:
        """What Telegram answers for a group the bot left, a migrated group, a closed topic."""
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int) or chat_id > 0 or method == "getupdates":
            return
        if chat_id in self.migrated_chats:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=self.migrated_chats[chat_id],
            )
        if chat_id in self.kicked_from:
            raise ApiError(403, "Forbidden: bot was kicked from the group chat")
        thread = params.get("message_thread_id")
        if thread is not None and (chat_id, int(thread)) in self.closed_topics:
            raise ApiError(400, "Bad Request: TOPIC_CLOSED")

    def _take_failure(self, method: str, chat_id: Any) -> None:
        for failure in self._failures:
            if failure.method != method or failure.times <= 0:
                continue
            if failure.chat_id is not None and str(failure.chat_id) != str(chat_id):
                continue
            if failure.after > 0:
                failure.after -= 1
                continue
            failure.times -= 1
            raise ApiError(failure.status, failure.description, failure.retry_after)

    def _handlers(
        self,
    ) -> dict[str, Callable[[dict[str, Any], dict[str, bytes]], Any]]:
        handlers: dict[str, Callable[[dict[str, Any], dict[str, bytes]], Any]] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "deletewebhook": self._delete_webhook,
            "setwebhook": self._set_webhook,
            "setmycommands": self._set_my_commands,
            "deletemycommands": self._true,
            "setmydescription": self._true,
            "setmyshortdescription": self._true,
            "close": self._true,
            "logout": self._true,
            "answercallbackquery": self._true,
            "sendmessage": self._send_message,
            "sendmediagroup": self._send_media_group,
            "sendchataction": self._send_chat_action,
            "setmessagereaction": self._set_message_reaction,
            "editmessagetext": self._edit_message_text,
            "editmessagecaption": self._edit_message_caption,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "copymessage": self._copy_message,
            "forwardmessage": self._forward_message,
            "sendcontact": self._send_contact,
            "sendlocation": self._send_location,
            "getfile": self._get_file,
            "readbusinessmessage": self._read_business_message,
            "getbusinessconnection": self._get_business_connection,
            "leavechat": self._leave_chat,
        }
        for method, kind in MEDIA_FIELDS.items():
            handlers[method] = functools.partial(self._send_media, kind=kind)
        return handlers

    # ---- methods --------------------------------------------------------------------------

    async def _true(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        return True

    async def _leave_chat(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int) or chat_id > 0:
            raise bad_request("chat not found")
        self.left_chats.append(chat_id)
        self.kicked_from.add(chat_id)
        return True

    async def _set_my_commands(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        """Checked as the Bot API does: an ISO 639-1 language (or none), valid commands."""
        language = params.get("language_code") or ""
        if language and not re.fullmatch(r"[a-z]{2}", str(language)):
            raise ApiError(400, "Bad Request: invalid language code specified")
        for command in params.get("commands") or []:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        return True

    async def _get_me(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return dict(self.bot_user)

    async def _delete_webhook(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        self.webhook_url = ""
        if params.get("drop_pending_updates") is True:
            self.confirmed_offset = self._next_update_id
        return True

    async def _set_webhook(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        self.webhook_url = str(params.get("url", ""))
        return True

    async def _get_updates(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset", 0) or 0)
        limit = max(1, min(100, int(params.get("limit", 100) or 100)))
        timeout = max(0, int(params.get("timeout", 0) or 0))
        if "allowed_updates" in params:
            allowed = params["allowed_updates"]
            self.allowed_updates = list(allowed) if isinstance(allowed, list) else None
        if offset < 0:
            keep = self.updates[offset:]
            if keep:
                self.confirmed_offset = max(self.confirmed_offset, keep[0]["update_id"])
        elif offset > self.confirmed_offset:
            self.confirmed_offset = offset
        self.updates = [u for u in self.updates if u["update_id"] >= self.confirmed_offset]
        self._poll_generation += 1
        generation = self._poll_generation
        await self._notify()

        def ready() -> bool:
            return (
                bool(self._deliverable())
                or self._closing
                or self.down
                or self.revoked
                or generation != self._poll_generation
            )

        if timeout and not ready():
            try:
                async with asyncio.timeout(timeout):
                    async with self._changed:
                        await self._changed.wait_for(ready)
            except TimeoutError:
                pass
        if self.revoked:
            raise ApiError(401, DEFAULT_DESCRIPTIONS[401])
        if generation != self._poll_generation:
            raise ApiError(409, DEFAULT_DESCRIPTIONS[409])
        if self.down:
            raise ApiError(502, DEFAULT_DESCRIPTIONS[502])
        return self._deliverable()[:limit]

    def _deliverable(self) -> list[dict[str, Any]]:
        allowed = self.allowed_updates
        result = []
        for update in self.updates:
            if update["update_id"] < self.confirmed_offset:
                continue
            kind = next((key for key in update if key != "update_id"), "")
            if (allowed and kind not in allowed) or (not allowed and kind in OPT_IN_UPDATES):
                # Telegram never delivers updates of types the bot did not subscribe to.
                if update not in self.skipped_updates:
                    self.skipped_updates.append(update)
                continue
            result.append(update)
        return result

    def _chat(self, params: dict[str, Any]) -> int | str:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("chat_id is empty")
        if not isinstance(chat_id, int | str):
            raise bad_request("chat not found")
        return chat_id

    def _new_message(self, chat_id: int | str, **fields: Any) -> dict[str, Any]:
        message_id = self._next_message_id[chat_id]
        self._next_message_id[chat_id] += 1
        chat_type = "private" if isinstance(chat_id, int) and chat_id > 0 else "supergroup"
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": {k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")},
            "chat": {"id": chat_id, "type": chat_type},
            "date": int(time.time()),
        }
        message.update({k: v for k, v in fields.items() if v is not None})
        self.sent[(chat_id, message_id)] = message
        self.known_messages.add((chat_id, message_id))
        # What a newer Bot API adds to a sent message (a field this aiogram cannot read).
        return {**message, **self.newer_fields} if self.newer_fields else message

    def _common_fields(self, params: dict[str, Any], chat_id: int | str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        markup = validate_reply_markup(params.get("reply_markup"))
        if markup is not None:
            fields["reply_markup"] = markup
        reply_to = params.get("reply_to_message_id")
        allow_missing = bool(params.get("allow_sending_without_reply"))
        reply_parameters = params.get("reply_parameters")
        if isinstance(reply_parameters, dict):
            reply_to = reply_parameters.get("message_id")
            allow_missing = bool(reply_parameters.get("allow_sending_without_reply"))
        if reply_to is not None:
            key = (chat_id, int(reply_to))
            if key in self.sent:
                fields["reply_to_message"] = dict(self.sent[key])
            elif key in self.known_messages:
                fields["reply_to_message"] = {
                    "message_id": int(reply_to),
                    "chat": {"id": chat_id, "type": "private"},
                    "date": int(time.time()),
                }
            elif not allow_missing:
                raise bad_request("message to be replied not found")
        return fields

    def _check_caption(self, params: dict[str, Any]) -> str | None:
        caption = params.get("caption")
        if caption is None or caption == "":
            return None
        if not isinstance(caption, str):
            raise bad_request("caption must be a string")
        if visible_length(caption, params.get("parse_mode")) > MAX_CAPTION:
            raise bad_request("message caption is too long")
        return caption

    async def _send_message(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        chat_id = self._chat(params)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        length = visible_length(text, params.get("parse_mode"))
        if length == 0:
            raise bad_request("message text is empty")
        if length > MAX_TEXT:
            raise bad_request("message is too long")
        fields = self._common_fields(params, chat_id)
        return self._new_message(chat_id, text=text, **fields)

    async def _resolve_media(
        self, name: str, value: Any, files: dict[str, bytes], filename: str | None
    ) -> tuple[bytes, str | None]:
        if name in files:
            return files[name], filename
        if not isinstance(value, str) or not value:
            raise bad_request(f"there is no {name} in the request")
        if value.startswith("attach://"):
            raise bad_request("wrong file identifier/HTTP URL specified")
        if value.startswith(("http://", "https://")):
            return await self._fetch_url(value), value.rsplit("/", 1)[-1].split("?")[0] or None
        stored = self._files.get(value)
        if stored is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        return stored.content, stored.file_path.rsplit("/", 1)[-1]

    async def _fetch_url(self, url: str) -> bytes:
        # Telegram downloads URLs itself and gives up on errors or files above 20 MB.
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response,
            ):
                if response.status != 200:
                    raise bad_request("failed to get HTTP URL content")
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            raise bad_request("failed to get HTTP URL content") from None
        if len(content) > MAX_DOWNLOAD:
            raise bad_request("failed to get HTTP URL content")
        return content

    def _media_object(self, kind: str, content: bytes, filename: str | None) -> Any:
        if not content:
            raise bad_request("file must be non-empty")
        if len(content) > MAX_UPLOAD:
            raise ApiError(413, "Request Entity Too Large")
        ext = (filename or "").rsplit(".", 1)[-1] if filename and "." in filename else "bin"
        stored = self._register_file(content, f"{kind}s", ext)
        base: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
        }
        if kind == "photo":
            return [
                {
                    **base,
                    "file_id": base["file_id"] + "s",
                    "file_unique_id": base["file_unique_id"] + "s",
                    "file_size": max(1, stored.file_size // 10),
                    "width": 90,
                    "height": 67,
                },
                {**base, "width": 1280, "height": 960},
            ]
        if kind == "document":
            return {
                **base,
                "file_name": filename or "document",
                "mime_type": "application/octet-stream",
            }
        if kind in ("video", "animation"):
            return {**base, "width": 640, "height": 360, "duration": 3}
        if kind == "voice":
            return {**base, "duration": 2, "mime_type": "audio/ogg"}
        if kind == "audio":
            return {**base, "duration": 3, "mime_type": "audio/mpeg", "file_name": filename}
        if kind == "video_note":
            return {**base, "length": 240, "duration": 2}
        return {
            **base,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
        }

    async def _send_media(
        self, params: dict[str, Any], files: dict[str, bytes], *, kind: str
    ) -> dict[str, Any]:
        chat_id = self._chat(params)
        caption = self._check_caption(params) if kind != "sticker" else None
        fields = self._common_fields(params, chat_id)
        content, filename = await self._resolve_media(
            kind, params.get(kind), files, params.get(f"_filename_{kind}")
        )
        media = self._media_object(kind, content, filename)
        return self._new_message(chat_id, caption=caption, **{kind: media}, **fields)

    async def _send_media_group(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> list[dict[str, Any]]:
        chat_id = self._chat(params)
        media = params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise bad_request("media group must contain 2-10 items")
        kinds = {item.get("type") for item in media if isinstance(item, dict)}
        if "document" in kinds and kinds != {"document"}:
            raise bad_request("documents can't be mixed with other media types")
        if "audio" in kinds and kinds != {"audio"}:
            raise bad_request("audio can't be mixed with other media types")
        fields = self._common_fields(params, chat_id)
        fields.pop("reply_markup", None)
        prepared = []
        for item in media:
            if not isinstance(item, dict) or item.get("type") not in (
                "photo",
                "video",
                "document",
                "audio",
            ):
                raise bad_request("wrong type of media in the group")
            caption = self._check_caption(item)
            ref = item.get("media")
            name = ref.removeprefix("attach://") if isinstance(ref, str) else ""
            content, filename = await self._resolve_media(name, ref, files, None)
            prepared.append((item["type"], content, filename or name, caption))
        group_id = str(int(time.time() * 1000))
        messages = []
        for kind, content, filename, caption in prepared:
            obj = self._media_object(kind, content, filename)
            messages.append(
                self._new_message(
                    chat_id, caption=caption, media_group_id=group_id, **{kind: obj}, **fields
                )
            )
        return messages

    async def _send_chat_action(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        self._chat(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    async def _set_message_reaction(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        chat_id = self._chat(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise bad_request("message_id is empty")
        reaction = params.get("reaction") or []
        if not isinstance(reaction, list):
            raise bad_request("can't parse reaction types JSON object")
        emojis = []
        for item in reaction:
            if not isinstance(item, dict) or item.get("type") != "emoji":
                raise bad_request("REACTION_INVALID")
            emoji = item.get("emoji")
            if emoji not in ALLOWED_REACTIONS:
                raise bad_request("REACTION_INVALID")
            emojis.append(str(emoji))
        if len(emojis) > 1:
            raise bad_request("REACTIONS_TOO_MANY")
        if (chat_id, message_id) not in self.known_messages:
            raise bad_request("message to react not found")
        self.reactions[(chat_id, message_id)] = emojis
        return True

    def _own_message(self, params: dict[str, Any]) -> tuple[int | str, int, dict[str, Any]]:
        chat_id = self._chat(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int) or (chat_id, message_id) not in self.sent:
            raise bad_request("message to edit not found")
        return chat_id, message_id, self.sent[(chat_id, message_id)]

    def _not_modified(self) -> ApiError:
        return bad_request(
            "message is not modified: specified new message content and reply markup are "
            "exactly the same as a current content and reply markup of the message"
        )

    async def _edit_message_text(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        _, _, message = self._own_message(params)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        if visible_length(text, params.get("parse_mode")) > MAX_TEXT:
            raise bad_request("message is too long")
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        markup = validate_reply_markup(params.get("reply_markup"))
        if message.get("text") == text and message.get("reply_markup") == markup:
            raise self._not_modified()
        message.update(text=text, edit_date=int(time.time()))
        if markup is not None:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        return dict(message)

    async def _edit_message_caption(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        _, _, message = self._own_message(params)
        if "text" in message:
            raise bad_request("there is no caption in the message to edit")
        caption = self._check_caption(params)
        if message.get("caption") == caption:
            raise self._not_modified()
        message.update(caption=caption, edit_date=int(time.time()))
        return dict(message)

    async def _edit_message_reply_markup(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        _, _, message = self._own_message(params)
        markup = validate_reply_markup(params.get("reply_markup"))
        if message.get("reply_markup") == markup:
            raise self._not_modified()
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        return dict(message)

    async def _delete_message(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        chat_id = self._chat(params)
        message_id = params.get("message_id")
        if (chat_id, message_id) not in self.known_messages:
            raise bad_request("message to delete not found")
        self.known_messages.discard((chat_id, int(str(message_id))))
        self.sent.pop((chat_id, int(str(message_id))), None)
        return True

    def _source(self, params: dict[str, Any], verb: str) -> tuple[int | str, int]:
        from_chat, message_id = params.get("from_chat_id"), params.get("message_id")
        if (
            not isinstance(from_chat, int | str)
            or not isinstance(message_id, int)
            or (from_chat, message_id) not in self.known_messages
        ):
            raise bad_request(f"message to {verb} not found")
        return from_chat, message_id

    async def _copy_message(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, int]:
        chat_id = self._chat(params)
        self._source(params, "copy")
        copied = self._new_message(chat_id, **self._common_fields(params, chat_id))
        return {"message_id": copied["message_id"]}

    async def _forward_message(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        chat_id = self._chat(params)
        source = self._source(params, "forward")
        original = self.sent.get(source, {})
        body = {k: v for k, v in original.items() if k in ("text", "caption", "photo", "document")}
        return self._new_message(chat_id, forward_date=int(time.time()), **body)

    async def _send_contact(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        chat_id = self._chat(params)
        if not params.get("phone_number") or not params.get("first_name"):
            raise bad_request("phone_number and first_name must be non-empty")
        contact = {"phone_number": params["phone_number"], "first_name": params["first_name"]}
        return self._new_message(chat_id, contact=contact, **self._common_fields(params, chat_id))

    async def _send_location(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        chat_id = self._chat(params)
        location = {"latitude": params.get("latitude"), "longitude": params.get("longitude")}
        if not all(isinstance(v, int | float) for v in location.values()):
            raise bad_request("wrong latitude/longitude")
        return self._new_message(chat_id, location=location, **self._common_fields(params, chat_id))

    async def _get_file(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        file_id = params.get("file_id")
        if not file_id:
            raise bad_request("file_id is empty")
        stored = self._files.get(str(file_id))
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.file_size > MAX_DOWNLOAD:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
