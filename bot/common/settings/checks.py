"""What the settings are checked against, and how a problem is said (no values echoed)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    SecretStr,
    ValidationError,
)

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
BOT_TOKEN = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]+")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
CHANNEL_SECRET = re.compile(r"[0-9a-f]{40}", re.IGNORECASE)
DEFAULT_MEDIA_HOSTS = (".amocrm.ru", ".amocrm.com", ".kommo.com")
HOST_SUFFIX = re.compile(r"\.?[a-z0-9-]+(\.[a-z0-9-]+)*", re.IGNORECASE)
NIL_UUID = "00000000-0000-0000-0000-000000000000"
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


def strip_slash(value: str) -> str:
    return value.rstrip("/")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


ASCII_ID = re.compile(r"[0-9]{1,20}")
HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_host_name(host: str) -> bool:
    """An IP address, or a DNS name the resolver can take (labels of 1-63 letters, digits, -)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return True
    name = host.rstrip(".")
    return 0 < len(name) <= 253 and all(HOST_LABEL.fullmatch(part) for part in name.split("."))


def check_url(variable: str, value: object) -> object:
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


def crm_credential_problems(data: dict[str, Any]) -> list[Problem]:
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


def problems_of(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        variable = ".".join(str(part) for part in error["loc"]) or "settings"
        message = plain(error["type"], error["msg"], error.get("ctx") or {})
        problems.append(Problem(variable, message))
    return problems


def plain(kind: str, message: str, ctx: dict[str, Any]) -> str:
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


def id_pairs(value: object, what: str, to: str, example: str) -> object:
    """`a:b,c:d` (whole numbers) as a dict; a readable ValueError for anything else."""
    if not isinstance(value, str):
        return value
    pairs: dict[int, int] = {}
    for part in (item.strip() for item in value.split(",")):
        if not part:
            continue
        left, sep, right = part.partition(":")
        if not sep or not ASCII_ID.fullmatch(left.strip()) or not ASCII_ID.fullmatch(right.strip()):
            raise ValueError(
                f"must be comma-separated <{what.removesuffix('_user')}_id>:<{to}> pairs, "
                f"e.g. {example}"
            )
        if int(left) in pairs:
            raise ValueError(f"names {what.replace('_', ' ')} {int(left)} twice")
        pairs[int(left)] = int(right)
    return pairs


# One item of a gettext LANGUAGE list or a locale name: `ru`, `ru_RU`, `en_US.UTF-8`, `C`.
LOCALE_ITEM = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})?(?:\.[\w-]+)?(?:@\w+)?|C|POSIX")


def bot_of(token: str) -> str:
    """`bot 123456` from a token (its public part), never the secret after the colon."""
    bot = token.split(":", 1)[0].strip()
    return f"bot {bot}" if bot.isdigit() and len(bot) <= 20 else "no bot id"


def check_uuid(value: str, hint: str) -> str:
    text = value.strip()
    if text == NIL_UUID:
        raise ValueError(f"{PLACEHOLDER} ({hint})")
    if not UUID.fullmatch(text):
        raise ValueError(f"must be a UUID like 344a5002-f8ca-454d-af3d-396180102ac7 ({hint})")
    return text
