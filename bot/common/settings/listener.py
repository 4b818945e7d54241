"""Settings of listener: the HTTP listener: where it binds, how amoCRM reaches it, what it shows."""

from __future__ import annotations

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
)

from bot.common.settings.checks import (
    is_host_name,
    strip_slash,
)


class ListenerSettings(BaseModel):
    """The HTTP listener: where it binds, how amoCRM reaches it, what it shows."""

    HTTP_HOST: str = "0.0.0.0"

    HTTP_PORT: int = Field(default=8080, ge=0, le=65535)

    PUBLIC_BASE_URL: AnyHttpUrl

    METRICS_TOKEN: SecretStr | None = None  # when set, GET /metrics needs "Bearer <token>"

    LOG_LEVEL: str = "INFO"

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

    @field_validator("LOG_LEVEL")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @property
    def public_base_url(self) -> str:
        """Public listener base without a trailing slash."""
        return strip_slash(str(self.PUBLIC_BASE_URL))
