"""Runtime settings, read from the environment and `.env`, checked in one pass.

One model per area (telegram, amocrm, listener, storage, staff), each with its own checks;
`Settings` composes them under the same variable names (they are a contract) and checks what
spans areas. Every problem is named at once, in plain words and without echoing a value (most
are secrets): a missing or empty variable, a malformed one, a placeholder copied from
`.env.example`, and the rule that the CRM needs either a token or the whole OAuth2 set.
"""

from __future__ import annotations

from typing import Any

from pydantic import ModelWrapValidatorHandler, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.common.settings.amocrm import AmoCrmSettings
from bot.common.settings.checks import (
    DEFAULT_DATABASE_PATH,
    OAUTH_SETTINGS,
    URL_SETTINGS,
    Problem,
    SettingsError,
    StartupError,
    check_url,
    crm_credential_problems,
    is_loopback,
    problems_of,
)
from bot.common.settings.listener import ListenerSettings
from bot.common.settings.staff import StaffSettings
from bot.common.settings.storage import StorageSettings
from bot.common.settings.telegram import TelegramSettings
from bot.common.texts import Language, account_language

__all__ = [
    "DEFAULT_DATABASE_PATH",
    "Problem",
    "Settings",
    "SettingsError",
    "StartupError",
    "is_loopback",
    "load_settings",
]


class Settings(
    TelegramSettings,
    AmoCrmSettings,
    ListenerSettings,
    StorageSettings,
    StaffSettings,
    BaseSettings,
):
    """Everything the bridge reads from its environment (README → Settings)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=True,
    )

    @model_validator(mode="wrap")
    @classmethod
    def _one_pass(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Field problems and the CRM credential rule, reported together."""
        problems = crm_credential_problems(data) if isinstance(data, dict) else []
        try:
            settings = handler(data)
        except ValidationError as exc:
            raise SettingsError(problems_of(exc) + problems) from None
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
        return check_url(str(info.field_name), value)

    @property
    def default_language(self) -> Language:
        """LANGUAGE, else the account's: Russian for `*.amocrm.ru`, English otherwise."""
        return account_language(self.amocrm_base_url, self.language_choice)

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


def load_settings(**overrides: object) -> Settings:
    """Load settings; raises SettingsError naming every problem."""
    return Settings(**overrides)  # type: ignore[arg-type]
