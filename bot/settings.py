"""Runtime settings, read from the environment and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SettingsError(Exception):
    """Raised when the environment does not describe a runnable bridge."""


def _strip_slash(value: str) -> str:
    return value.rstrip("/")


class Settings(BaseSettings):
    """Everything the bridge reads from its environment (see DESIGN.md)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=True,
    )

    TELEGRAM_BOT_TOKEN: SecretStr
    TELEGRAM_API_URL: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org")

    AMOCRM_BASE_URL: AnyHttpUrl
    AMOCRM_ACCESS_TOKEN: SecretStr | None = None
    AMOCRM_CLIENT_ID: str | None = None
    AMOCRM_CLIENT_SECRET: SecretStr | None = None
    AMOCRM_REDIRECT_URI: str | None = None
    AMOCRM_AUTH_CODE: SecretStr | None = None

    AMOJO_BASE_URL: AnyHttpUrl = AnyHttpUrl("https://amojo.amocrm.ru")
    AMOJO_CHANNEL_ID: str = Field(min_length=1)
    AMOJO_CHANNEL_SECRET: SecretStr
    AMOJO_ACCOUNT_ID: str | None = None
    AMOJO_CHANNEL_TITLE: str | None = None

    HTTP_HOST: str = "0.0.0.0"
    HTTP_PORT: int = Field(default=8080, ge=0, le=65535)
    PUBLIC_BASE_URL: AnyHttpUrl

    DATABASE_PATH: Path = Path("data/bridge.sqlite3")
    OPERATOR_IDS: Annotated[frozenset[int], NoDecode] = frozenset()
    TIME_WINDOW_SECONDS: int = Field(default=0, ge=0)
    CALL_SOURCE: str = Field(default="telegram-bridge", min_length=1)
    TIMEZONE: str = "UTC"
    RECOVERY_LOOKBACK_DAYS: int = Field(default=7, ge=1, le=365)
    LOG_LEVEL: str = "INFO"

    @field_validator("OPERATOR_IDS", mode="before")
    @classmethod
    def _parse_operator_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",")]
            try:
                return frozenset(int(part) for part in parts if part)
            except ValueError:
                raise ValueError("must be comma-separated Telegram user ids") from None
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
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name such as Europe/Moscow") from None
        return value

    @field_validator("TELEGRAM_BOT_TOKEN")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        bot_id, _, secret = token.partition(":")
        if not bot_id.isdigit() or not secret:
            raise ValueError("must look like 123456:ABC-DEF (as issued by @BotFather)")
        return value

    @field_validator("AMOJO_CHANNEL_SECRET")
    @classmethod
    def _check_secret(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _check_crm_auth(self) -> Settings:
        oauth = {
            "AMOCRM_CLIENT_ID": self.AMOCRM_CLIENT_ID,
            "AMOCRM_CLIENT_SECRET": self.AMOCRM_CLIENT_SECRET,
            "AMOCRM_REDIRECT_URI": self.AMOCRM_REDIRECT_URI,
        }
        if self.AMOCRM_ACCESS_TOKEN is None:
            missing = [name for name, value in oauth.items() if not value]
            if missing:
                raise ValueError(
                    "set AMOCRM_ACCESS_TOKEN, or OAuth2 settings AMOCRM_CLIENT_ID, "
                    "AMOCRM_CLIENT_SECRET, AMOCRM_REDIRECT_URI and AMOCRM_AUTH_CODE "
                    f"(missing: {', '.join(missing)})"
                )
        return self

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
    def uses_oauth(self) -> bool:
        """True when the CRM token comes from the OAuth2 code flow."""
        return self.AMOCRM_ACCESS_TOKEN is None


def load_settings(**overrides: object) -> Settings:
    """Load settings, turning validation errors into one readable SettingsError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """One message naming every offending variable, without echoing values."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "settings"
        message = error["msg"]
        if error["type"] == "missing":
            message = "is required but not set"
        lines.append(f"  {location}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)
