"""Settings of staff: the people: operators, Business owners, their language and time zone."""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    field_validator,
)
from pydantic_settings import NoDecode

from bot.common.settings.checks import (
    ASCII_ID,
    LOCALE_ITEM,
    id_pairs,
)
from bot.common.texts import Language


class StaffSettings(BaseModel):
    """The people: operators, Business owners, their language and time zone."""

    OPERATOR_IDS: Annotated[frozenset[int], NoDecode] = frozenset()

    CALL_SOURCE: str = Field(default="telegram-bridge", min_length=1)

    TIMEZONE: str = "UTC"

    BUSINESS_OWNER_USERS: Annotated[dict[int, int], NoDecode] = Field(default_factory=dict)

    # Staff replies and amoCRM error texts: `ru` or `en` (unset: the account's, .ru is Russian).
    # Also the gettext variable some hosts set (`ru_RU:ru`): read as its first ru/en item.
    LANGUAGE: str | None = None

    @field_validator("OPERATOR_IDS", mode="before")
    @classmethod
    def _parse_operator_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",")]
            # ASCII digits only: int() would also read "１２３" as someone's id.
            if not all(ASCII_ID.fullmatch(part) for part in parts if part):
                raise ValueError("must be comma-separated Telegram user ids (digits 0-9)")
            return frozenset(int(part) for part in parts if part)
        return value

    @field_validator("LANGUAGE")
    @classmethod
    def _check_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        items = [item for item in value.strip().split(":") if item]
        if not items or not all(LOCALE_ITEM.fullmatch(item) for item in items):
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

    @field_validator("BUSINESS_OWNER_USERS", mode="before")
    @classmethod
    def _parse_owner_users(cls, value: object) -> object:
        return id_pairs(value, "telegram_user", "amocrm_user_id", "5001234567:8812345")

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

    @property
    def business_owners(self) -> frozenset[int]:
        """Whose Telegram Business accounts the bridge serves: OPERATOR_IDS and the owners of
        BUSINESS_OWNER_USERS."""
        return self.OPERATOR_IDS | frozenset(self.BUSINESS_OWNER_USERS)
