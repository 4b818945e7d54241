"""Settings of amocrm: the amoCRM account, the amojo channel and how the bridge works with them."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
)
from pydantic_settings import NoDecode

from bot.common.settings.checks import (
    CHANNEL_SECRET,
    DEFAULT_MEDIA_HOSTS,
    HOST_SUFFIX,
    PLACEHOLDER,
    PLACEHOLDER_MARK,
    check_uuid,
    id_pairs,
    strip_slash,
)


class AmoCrmSettings(BaseModel):
    """The amoCRM account, the amojo channel and how the bridge works with them."""

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

    TIME_WINDOW_SECONDS: int = Field(default=0, ge=0)

    RECOVERY_LOOKBACK_DAYS: int = Field(default=7, ge=1, le=365)

    # How often amoCRM's record of manager messages is compared with the hooks that came,
    # and PUBLIC_BASE_URL is checked; and how many requests a second that may spend.
    RECONCILE_INTERVAL_SECONDS: int = Field(default=60, ge=5, le=3600)

    RECONCILE_REQUESTS_PER_SECOND: float = Field(default=5.0, gt=0, le=50)

    # Host suffixes manager media may come from, besides the hosts of AMOJO_/AMOCRM_BASE_URL.
    MEDIA_ALLOWED_HOSTS: Annotated[tuple[str, ...], NoDecode] = DEFAULT_MEDIA_HOSTS

    # One amoCRM source per bot, managed through /api/v4/sources (needs an admin's token).
    AMOCRM_SOURCES: bool = False

    AMOCRM_SOURCE_PIPELINES: Annotated[dict[int, int], NoDecode] = Field(default_factory=dict)

    AMOJO_CHANNEL_CODE: str | None = None  # the channel's code: `origin_code` of the sources

    # A new lead that came through a deep link of a campaign (`utm_campaign`) moves into that
    # campaign's pipeline: `<utm_campaign>:<pipeline_id>,…`.
    AMOCRM_CAMPAIGN_PIPELINES: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)

    # Telegram Business: the channel bot's amojo id (issued at registration) authors an owner's
    # own messages unless BUSINESS_OWNER_USERS maps the owner to an amoCRM user.
    AMOJO_BOT_ID: str | None = None

    @field_validator("AMOCRM_SOURCE_PIPELINES", mode="before")
    @classmethod
    def _parse_pipelines(cls, value: object) -> object:
        return id_pairs(value, "bot", "pipeline_id", "123456789:4401")

    @field_validator("AMOCRM_CAMPAIGN_PIPELINES", mode="before")
    @classmethod
    def _parse_campaigns(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, int] = {}
        for part in (item.strip() for item in value.split(",")):
            if not part:
                continue
            campaign, _, pipeline = part.rpartition(":")
            campaign = campaign.strip()
            if not campaign or not pipeline.strip().isdigit() or not campaign.isprintable():
                raise ValueError(
                    "must be comma-separated <utm_campaign>:<pipeline_id> pairs, "
                    "e.g. spring:4401,black_friday:4402"
                )
            if campaign in pairs:
                raise ValueError(f"names campaign {campaign!r} twice")
            pairs[campaign] = int(pipeline)
        return pairs

    @field_validator("MEDIA_ALLOWED_HOSTS", mode="before")
    @classmethod
    def _parse_media_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            hosts = tuple(part.strip().lower() for part in value.split(",") if part.strip())
            bad = [
                host
                for host in hosts
                if not HOST_SUFFIX.fullmatch(host) or "." not in host.lstrip(".")
            ]
            if bad:
                raise ValueError(
                    "must be comma-separated host names or suffixes like .amocrm.ru "
                    "(no scheme, port or path; not a bare top-level domain)"
                )
            return hosts
        return value

    @field_validator("AMOJO_CHANNEL_SECRET", mode="before")
    @classmethod
    def _check_secret(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        secret = value.strip()
        if PLACEHOLDER_MARK in secret:
            raise ValueError(f"{PLACEHOLDER}: use the secret amoCRM support issued")
        if not CHANNEL_SECRET.fullmatch(secret):
            raise ValueError(
                f"must be the 40 hexadecimal characters amoCRM support issued "
                f"(this one has {len(secret)} characters"
                f"{'' if secret.isalnum() else ', not all of them letters or digits'})"
            )
        return secret

    @field_validator("AMOJO_CHANNEL_ID")
    @classmethod
    def _check_channel_id(cls, value: str) -> str:
        return check_uuid(value, "issued by amoCRM support")

    @field_validator("AMOJO_ACCOUNT_ID")
    @classmethod
    def _check_account_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_uuid(value, "or leave it empty to read it from amoCRM")

    @property
    def amocrm_base_url(self) -> str:
        """CRM REST base without a trailing slash."""
        return strip_slash(str(self.AMOCRM_BASE_URL))

    @property
    def amojo_base_url(self) -> str:
        """amojo base without a trailing slash."""
        return strip_slash(str(self.AMOJO_BASE_URL))

    @property
    def media_origins(self) -> list[str]:
        """The configured amoCRM addresses: media from them is always fetched."""
        return [self.amojo_base_url, self.amocrm_base_url]

    @property
    def uses_oauth(self) -> bool:
        """True when the CRM token comes from the OAuth2 code flow."""
        return self.AMOCRM_ACCESS_TOKEN is None
