"""Settings of storage: the database and how long finished work is kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    BaseModel,
    Field,
    field_validator,
)

from bot.common.limits import DEDUP_KEY_EXTRA_DAYS
from bot.common.settings.checks import (
    DEFAULT_DATABASE_PATH,
)


class StorageSettings(BaseModel):
    """The database and how long finished work is kept."""

    DATABASE_PATH: Path = DEFAULT_DATABASE_PATH

    JOB_RETENTION_DAYS: int = Field(default=7, ge=1, le=3650)

    @field_validator("DATABASE_PATH")
    @classmethod
    def _check_database_path(cls, value: Path) -> Path:
        if value.is_dir():
            raise ValueError(
                f"is a directory; name the database file in it, e.g. {value / 'bridge.sqlite3'}"
            )
        return value

    @property
    def dedup_window_seconds(self) -> float:
        """How long a finished hook's or update's key is remembered (a repeat is a duplicate)."""
        return (self.JOB_RETENTION_DAYS + DEDUP_KEY_EXTRA_DAYS) * 86400.0
