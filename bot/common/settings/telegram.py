"""Settings of telegram: the bots and the Bot API they are reached through."""

from __future__ import annotations

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    SecretStr,
    field_validator,
)

from bot.common.settings.checks import (
    BOT_TOKEN,
    PLACEHOLDER,
    PLACEHOLDER_MARK,
    bot_of,
    strip_slash,
)


class TelegramSettings(BaseModel):
    """The bots and the Bot API they are reached through."""

    TELEGRAM_BOT_TOKEN: SecretStr  # one token, or several separated by commas (first: primary)

    TELEGRAM_API_URL: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org")

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
            which = "" if len(tokens) == 1 else f"token {position} ({bot_of(token)}) "
            if PLACEHOLDER_MARK in token:
                raise ValueError(f"{which}{PLACEHOLDER}: paste the token @BotFather gave you")
            if any(ch.isspace() for ch in token):
                raise ValueError(
                    f"{which}contains a space: paste the token exactly as @BotFather gave it"
                )
            if not BOT_TOKEN.fullmatch(token):
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
        return strip_slash(str(self.TELEGRAM_API_URL))
