"""Runtime settings, read from the environment and `.env`, checked in one pass.

Every problem is named at once, in plain words and without echoing a value (most are
secrets): a missing or empty variable, a malformed one, a placeholder copied from
`.env.example`, and the rule that the CRM needs either a token or the whole OAuth2 set.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.common.limits import DEDUP_KEY_EXTRA_DAYS
from bot.common.texts import Language, account_language
from storage.crm import token_pair_stored

DEFAULT_DATABASE_PATH = Path("data/bridge.sqlite3")
OAUTH_SETTINGS = (
    "AMOCRM_CLIENT_ID",
    "AMOCRM_CLIENT_SECRET",
    "AMOCRM_REDIRECT_URI",
    "AMOCRM_AUTH_CODE",
)
URL_SETTINGS = ("TELEGRAM_API_URL", "AMOCRM_BASE_URL", "AMOJO_BASE_URL", "PUBLIC_BASE_URL")
URL_EXAMPLES = {
    "TELEGRAM_API_URL": "https://api.telegram.org",
    "AMOJO_BASE_URL": "https://amojo.amocrm.ru",
    "PUBLIC_BASE_URL": "https://bridge.your-company.com",
    "AMOCRM_REDIRECT_URI": "https://your-company.com/oauth",
}
# Hosts and values that `.env.example` ships with: a copy that was never filled in.
PLACEHOLDER_MARK = "replace-with"
PLACEHOLDER_HOSTS = {
    "AMOCRM_BASE_URL": ("example.amocrm.ru", "example.kommo.com"),
    "PUBLIC_BASE_URL": ("example.com", "example.org", "example.net", "your-company.com"),
}
_BOT_TOKEN = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_CHANNEL_SECRET = re.compile(r"[0-9a-f]{40}", re.IGNORECASE)
DEFAULT_MEDIA_HOSTS = (".amocrm.ru", ".amocrm.com", ".kommo.com")
_HOST_SUFFIX = re.compile(r"\.?[a-z0-9-]+(\.[a-z0-9-]+)*", re.IGNORECASE)
_NIL_UUID = "00000000-0000-0000-0000-000000000000"
PLACEHOLDER = "is still the placeholder copied from .env.example"


@dataclass(frozen=True, slots=True)
class Problem:
    """One setting that stops the start, and why."""

    variable: str
    message: str

    def __str__(self) -> str:
        return f"  {self.variable}: {self.message}"


class SettingsError(Exception):
    """The environment does not describe a runnable bridge; names every problem."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems), key=lambda problem: problem.variable)
        super().__init__(
            f"invalid configuration ({len(self.problems)} problem"
            f"{'' if len(self.problems) == 1 else 's'}; set them in .env or the environment, "
            "see README → Settings):\n" + "\n".join(str(problem) for problem in self.problems)
        )


class StartupError(Exception):
    """The bridge cannot start and retrying will not help; the message names the setting."""


def _strip_slash(value: str) -> str:
    return value.rstrip("/")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_ASCII_ID = re.compile(r"[0-9]{1,20}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_host_name(host: str) -> bool:
    """An IP address, or a DNS name the resolver can take (labels of 1-63 letters, digits, -)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return True
    name = host.rstrip(".")
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(part) for part in name.split("."))


def _check_url(variable: str, value: object) -> object:
    """A readable refusal of a URL without http(s):// and of the example hosts."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        example = URL_EXAMPLES.get(variable, "https://example.amocrm.ru")
        raise ValueError(f"must start with https:// (for example {example})")
    host = (parts.hostname or "").lower()
    for example in PLACEHOLDER_HOSTS.get(variable, ()):
        if host == example or host.endswith("." + example):
            raise ValueError(PLACEHOLDER)
    if variable in ("AMOCRM_BASE_URL", "AMOJO_BASE_URL") and parts.path.strip("/"):
        raise ValueError(
            "must be the address only, without a path (like https://example.amocrm.ru)"
        )
    return text


def _crm_credential_problems(data: dict[str, Any]) -> list[Problem]:
    """A long-lived token, or all four OAuth2 settings (the code only until it is exchanged)."""

    def given(name: str) -> bool:
        value = data.get(name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return value is not None and str(value).strip() != ""

    if given("AMOCRM_ACCESS_TOKEN"):
        return []
    oauth = [name for name in OAUTH_SETTINGS if given(name)]
    if not oauth:
        return [
            Problem(
                "AMOCRM_ACCESS_TOKEN",
                "is required but not set (a long-lived token from the integration's "
                '"Keys and access" tab), unless the OAuth2 settings AMOCRM_CLIENT_ID, '
                "AMOCRM_CLIENT_SECRET, AMOCRM_REDIRECT_URI and AMOCRM_AUTH_CODE are all set",
            )
        ]
    problems = [
        Problem(name, f"is required for OAuth2 ({', '.join(oauth)} set) but not set")
        for name in OAUTH_SETTINGS[:3]
        if name not in oauth
    ]
    if "AMOCRM_AUTH_CODE" not in oauth:
        database = data.get("DATABASE_PATH") or DEFAULT_DATABASE_PATH
        if not token_pair_stored(Path(str(database))):
            problems.append(
                Problem(
                    "AMOCRM_AUTH_CODE",
                    "is required for the first OAuth2 start (no token is stored in "
                    "DATABASE_PATH yet): a fresh authorization code, valid for 20 minutes",
                )
            )
    return problems


def _problems_of(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        variable = ".".join(str(part) for part in error["loc"]) or "settings"
        message = _plain(error["type"], error["msg"], error.get("ctx") or {})
        problems.append(Problem(variable, message))
    return problems


def _plain(kind: str, message: str, ctx: dict[str, Any]) -> str:
    """pydantic's wording turned into what an operator reads."""
    if kind == "missing":
        return "is required but not set"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind.startswith("url"):
        return "must be a URL starting with https://"
    if kind == "string_too_short":
        return "must not be empty"
    return message.removeprefix("Value error, ")


def _id_pairs(value: object, what: str, to: str, example: str) -> object:
    """`a:b,c:d` (whole numbers) as a dict; a readable ValueError for anything else."""
    if not isinstance(value, str):
        return value
    pairs: dict[int, int] = {}
    for part in (item.strip() for item in value.split(",")):
        if not part:
            continue
        left, sep, right = part.partition(":")
        if (
            not sep
            or not _ASCII_ID.fullmatch(left.strip())
            or not _ASCII_ID.fullmatch(right.strip())
        ):
            raise ValueError(
                f"must be comma-separated <{what.removesuffix('_user')}_id>:<{to}> pairs, "
                f"e.g. {example}"
            )
        if int(left) in pairs:
            raise ValueError(f"names {what.replace('_', ' ')} {int(left)} twice")
        pairs[int(left)] = int(right)
    return pairs


# One item of a gettext LANGUAGE list or a locale name: `ru`, `ru_RU`, `en_US.UTF-8`, `C`.
_LOCALE_ITEM = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})?(?:\.[\w-]+)?(?:@\w+)?|C|POSIX")


class Settings(BaseSettings):
    """Everything the bridge reads from its environment (README → Settings)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=True,
    )

    TELEGRAM_BOT_TOKEN: SecretStr  # one token, or several separated by commas (first: primary)
    TELEGRAM_API_URL: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org")

    AMOCRM_BASE_URL: AnyHttpUrl
    AMOCRM_ACCESS_TOKEN: SecretStr | None = None
    AMOCRM_CLIENT_ID: str | None = None
    AMOCRM_CLIENT_SECRET: SecretStr | None = None
    AMOCRM_REDIRECT_URI: str | None = None  # sent exactly as registered in the integration
    AMOCRM_AUTH_CODE: SecretStr | None = None

    AMOJO_BASE_URL: AnyHttpUrl = AnyHttpUrl("https://amojo.amocrm.ru")
    AMOJO_CHANNEL_ID: str
    AMOJO_CHANNEL_SECRET: SecretStr
    AMOJO_ACCOUNT_ID: str | None = None
    AMOJO_CHANNEL_TITLE: str | None = None

    HTTP_HOST: str = "0.0.0.0"
    HTTP_PORT: int = Field(default=8080, ge=0, le=65535)
    PUBLIC_BASE_URL: AnyHttpUrl

    DATABASE_PATH: Path = DEFAULT_DATABASE_PATH
    OPERATOR_IDS: Annotated[frozenset[int], NoDecode] = frozenset()
    TIME_WINDOW_SECONDS: int = Field(default=0, ge=0)
    CALL_SOURCE: str = Field(default="telegram-bridge", min_length=1)
    TIMEZONE: str = "UTC"
    RECOVERY_LOOKBACK_DAYS: int = Field(default=7, ge=1, le=365)
    # How often amoCRM's record of manager messages is compared with the hooks that came,
    # and PUBLIC_BASE_URL is checked; and how many requests a second that may spend.
    RECONCILE_INTERVAL_SECONDS: int = Field(default=60, ge=5, le=3600)
    RECONCILE_REQUESTS_PER_SECOND: float = Field(default=5.0, gt=0, le=50)
    JOB_RETENTION_DAYS: int = Field(default=7, ge=1, le=3650)
    METRICS_TOKEN: SecretStr | None = None  # when set, GET /metrics needs "Bearer <token>"
    # Host suffixes manager media may come from, besides the hosts of AMOJO_/AMOCRM_BASE_URL.
    MEDIA_ALLOWED_HOSTS: Annotated[tuple[str, ...], NoDecode] = DEFAULT_MEDIA_HOSTS
    LOG_LEVEL: str = "INFO"
    # One amoCRM source per bot, managed through /api/v4/sources (needs an admin's token).
    AMOCRM_SOURCES: bool = False
    AMOCRM_SOURCE_PIPELINES: Annotated[dict[int, int], NoDecode] = Field(default_factory=dict)
    AMOJO_CHANNEL_CODE: str | None = None  # the channel's code: `origin_code` of the sources
    # Telegram Business: the channel bot's amojo id (issued at registration) authors an owner's
    # own messages unless BUSINESS_OWNER_USERS maps the owner to an amoCRM user.
    AMOJO_BOT_ID: str | None = None
    BUSINESS_OWNER_USERS: Annotated[dict[int, int], NoDecode] = Field(default_factory=dict)
    # Staff replies and amoCRM error texts: `ru` or `en` (unset: the account's, .ru is Russian).
    # Also the gettext variable some hosts set (`ru_RU:ru`): read as its first ru/en item.
    LANGUAGE: str | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _one_pass(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Field problems and the CRM credential rule, reported together."""
        problems = _crm_credential_problems(data) if isinstance(data, dict) else []
        try:
            settings = handler(data)
        except ValidationError as exc:
            raise SettingsError(_problems_of(exc) + problems) from None
        problems += settings._pipeline_problems()
        if problems:
            raise SettingsError(problems)
        return settings

    def _pipeline_problems(self) -> list[Problem]:
        unknown = sorted(set(self.AMOCRM_SOURCE_PIPELINES) - set(self.bot_ids))
        if not unknown:
            return []
        return [
            Problem(
                "AMOCRM_SOURCE_PIPELINES",
                f"names bot {', '.join(map(str, unknown))}, which is not among the bots of "
                f"TELEGRAM_BOT_TOKEN ({', '.join(map(str, self.bot_ids))})",
            )
        ]

    @field_validator(*URL_SETTINGS, "AMOCRM_REDIRECT_URI", mode="before")
    @classmethod
    def _check_urls(cls, value: object, info: Any) -> object:
        return _check_url(str(info.field_name), value)

    @field_validator("OPERATOR_IDS", mode="before")
    @classmethod
    def _parse_operator_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",")]
            # ASCII digits only: int() would also read "１２３" as someone's id.
            if not all(_ASCII_ID.fullmatch(part) for part in parts if part):
                raise ValueError("must be comma-separated Telegram user ids (digits 0-9)")
            return frozenset(int(part) for part in parts if part)
        return value

    @field_validator("HTTP_HOST")
    @classmethod
    def _check_http_host(cls, value: str) -> str:
        host = value.strip()
        if not is_host_name(host):
            raise ValueError(
                "must be an IP address of this machine or a host name (like 127.0.0.1 behind a "
                "proxy, or 0.0.0.0 for every interface)"
            )
        return host

    @field_validator("DATABASE_PATH")
    @classmethod
    def _check_database_path(cls, value: Path) -> Path:
        if value.is_dir():
            raise ValueError(
                f"is a directory; name the database file in it, e.g. {value / 'bridge.sqlite3'}"
            )
        return value

    @field_validator("LANGUAGE")
    @classmethod
    def _check_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        items = [item for item in value.strip().split(":") if item]
        if not items or not all(_LOCALE_ITEM.fullmatch(item) for item in items):
            raise ValueError("must be ru or en")
        return value.strip()

    @property
    def language_choice(self) -> Language | None:
        """`LANGUAGE` as ru or en: its first Russian or English item (None: neither, unset)."""
        for item in (self.LANGUAGE or "").split(":"):
            primary = re.split(r"[_.@-]", item)[0].lower()
            if primary == "ru":
                return "ru"
            if primary == "en":
                return "en"
        return None

    @field_validator("AMOCRM_SOURCE_PIPELINES", mode="before")
    @classmethod
    def _parse_pipelines(cls, value: object) -> object:
        return _id_pairs(value, "bot", "pipeline_id", "123456789:4401")

    @field_validator("BUSINESS_OWNER_USERS", mode="before")
    @classmethod
    def _parse_owner_users(cls, value: object) -> object:
        return _id_pairs(value, "telegram_user", "amocrm_user_id", "5001234567:8812345")

    @field_validator("MEDIA_ALLOWED_HOSTS", mode="before")
    @classmethod
    def _parse_media_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            hosts = tuple(part.strip().lower() for part in value.split(",") if part.strip())
            bad = [
                host
                for host in hosts
                if not _HOST_SUFFIX.fullmatch(host) or "." not in host.lstrip(".")
            ]
            if bad:
                raise ValueError(
                    "must be comma-separated host names or suffixes like .amocrm.ru "
                    "(no scheme, port or path; not a bare top-level domain)"
                )
            return hosts
        return value

    @field_validator("LOG_LEVEL")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("TIMEZONE")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            if len(value) > 255:
                raise ValueError(value)
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
            raise ValueError("must be an IANA time zone name such as Europe/Moscow") from None
        return value

    @field_validator("TELEGRAM_BOT_TOKEN", mode="before")
    @classmethod
    def _check_token(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        tokens = [token.strip() for token in value.split(",")]
        if len(tokens) > 1 and not all(tokens):
            raise ValueError("has an empty token between commas")
        seen: dict[str, int] = {}
        for position, token in enumerate(tokens, start=1):
            which = "" if len(tokens) == 1 else f"token {position} ({_bot_of(token)}) "
            if PLACEHOLDER_MARK in token:
                raise ValueError(f"{which}{PLACEHOLDER}: paste the token @BotFather gave you")
            if any(ch.isspace() for ch in token):
                raise ValueError(
                    f"{which}contains a space: paste the token exactly as @BotFather gave it"
                )
            if not _BOT_TOKEN.fullmatch(token):
                raise ValueError(
                    f"{which}must look like 123456789:AAE… (the bot id, a colon, then letters, "
                    "digits, '-' and '_'), as issued by @BotFather"
                )
            bot = token.split(":", 1)[0]
            if bot in seen:
                raise ValueError(
                    f"tokens {seen[bot]} and {position} are both for bot {bot}: each bot once"
                )
            seen[bot] = position
        return ",".join(tokens)

    @field_validator("AMOJO_CHANNEL_SECRET", mode="before")
    @classmethod
    def _check_secret(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        secret = value.strip()
        if PLACEHOLDER_MARK in secret:
            raise ValueError(f"{PLACEHOLDER}: use the secret amoCRM support issued")
        if not _CHANNEL_SECRET.fullmatch(secret):
            raise ValueError(
                f"must be the 40 hexadecimal characters amoCRM support issued "
                f"(this one has {len(secret)} characters"
                f"{'' if secret.isalnum() else ', not all of them letters or digits'})"
            )
        return secret

    @field_validator("AMOJO_CHANNEL_ID")
    @classmethod
    def _check_channel_id(cls, value: str) -> str:
        return _check_uuid(value, "issued by amoCRM support")

    @field_validator("AMOJO_ACCOUNT_ID")
    @classmethod
    def _check_account_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _check_uuid(value, "or leave it empty to read it from amoCRM")

    @property
    def bot_tokens(self) -> list[str]:
        """Every bot's token, the primary bot's first."""
        return self.TELEGRAM_BOT_TOKEN.get_secret_value().split(",")

    @property
    def bot_ids(self) -> list[int]:
        """Every bot's Telegram id (the part of its token before the colon), primary first."""
        return [int(token.split(":", 1)[0]) for token in self.bot_tokens]

    @property
    def telegram_api_url(self) -> str:
        """Telegram Bot API base without a trailing slash."""
        return _strip_slash(str(self.TELEGRAM_API_URL))

    @property
    def amocrm_base_url(self) -> str:
        """CRM REST base without a trailing slash."""
        return _strip_slash(str(self.AMOCRM_BASE_URL))

    @property
    def amojo_base_url(self) -> str:
        """amojo base without a trailing slash."""
        return _strip_slash(str(self.AMOJO_BASE_URL))

    @property
    def public_base_url(self) -> str:
        """Public listener base without a trailing slash."""
        return _strip_slash(str(self.PUBLIC_BASE_URL))

    @property
    def default_language(self) -> Language:
        """LANGUAGE, else the account's: Russian for `*.amocrm.ru`, English otherwise."""
        return account_language(self.amocrm_base_url, self.language_choice)

    @property
    def media_origins(self) -> list[str]:
        """The configured amoCRM addresses: media from them is always fetched."""
        return [self.amojo_base_url, self.amocrm_base_url]

    @property
    def dedup_window_seconds(self) -> float:
        """How long a finished hook's or update's key is remembered (a repeat is a duplicate)."""
        return (self.JOB_RETENTION_DAYS + DEDUP_KEY_EXTRA_DAYS) * 86400.0

    @property
    def business_owners(self) -> frozenset[int]:
        """Whose Telegram Business accounts the bridge serves: OPERATOR_IDS and the owners of
        BUSINESS_OWNER_USERS."""
        return self.OPERATOR_IDS | frozenset(self.BUSINESS_OWNER_USERS)

    @property
    def uses_oauth(self) -> bool:
        """True when the CRM token comes from the OAuth2 code flow."""
        return self.AMOCRM_ACCESS_TOKEN is None

    def warnings(self) -> list[str]:
        """Settings that work but that an operator should look at (logged at start)."""
        found = []
        for variable in URL_SETTINGS:
            url = getattr(self, variable)
            if url.scheme == "http" and not is_loopback(url.host or ""):
                found.append(
                    f"{variable} uses http:// for {url.host}: traffic to it is not encrypted "
                    "(use https:// unless it is a private network you trust)"
                )
        if self.AMOCRM_ACCESS_TOKEN is not None and any(
            getattr(self, name) for name in OAUTH_SETTINGS
        ):
            found.append("AMOCRM_ACCESS_TOKEN is set, so the AMOCRM_CLIENT_* settings are unused")
        language = (self.LANGUAGE or "").lower()
        if language and language not in ("ru", "en"):
            read = self.language_choice
            found.append(
                f"LANGUAGE is {self.LANGUAGE!r}, which looks like the system's locale list: "
                + (f"read as {read}" if read else "neither ru nor en, so the account's is used")
                + " (set LANGUAGE=ru or LANGUAGE=en for the bridge)"
            )
        return found


def _bot_of(token: str) -> str:
    """`bot 123456` from a token (its public part), never the secret after the colon."""
    bot = token.split(":", 1)[0].strip()
    return f"bot {bot}" if bot.isdigit() and len(bot) <= 20 else "no bot id"


def _check_uuid(value: str, hint: str) -> str:
    text = value.strip()
    if text == _NIL_UUID:
        raise ValueError(f"{PLACEHOLDER} ({hint})")
    if not _UUID.fullmatch(text):
        raise ValueError(f"must be a UUID like 344a5002-f8ca-454d-af3d-396180102ac7 ({hint})")
    return text


def load_settings(**overrides: object) -> Settings:
    """Load settings; raises SettingsError naming every problem."""
    return Settings(**overrides)  # type: ignore[arg-type]
