"""Customer-facing texts in Russian and English."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "greeting": {
        "ru": (
            "Здравствуйте! Напишите ваш вопрос прямо здесь — менеджер ответит в этом чате.\n"
            "Можно поделиться номером телефона кнопкой ниже, чтобы мы узнали вас и могли "
            "написать первыми."
        ),
        "en": (
            "Hello! Write your question right here and a manager will answer in this chat.\n"
            "You can share your phone number with the button below so we recognise you and "
            "can write to you first."
        ),
    },
    "share_phone_button": {"ru": "📱 Поделиться номером", "en": "📱 Share my phone number"},
    "phone_saved": {
        "ru": "Спасибо, номер сохранён. Менеджер скоро ответит.",
        "en": "Thank you, your number is saved. A manager will answer soon.",
    },
}


def language_of(language_code: str | None) -> str:
    """`ru` for Russian-speaking Telegram clients, else `en`."""
    if language_code and language_code.split("-")[0].lower() in {"ru", "uk", "be", "kk"}:
        return "ru"
    return "en"


def text(key: str, language_code: str | None) -> str:
    """A text in the customer's language."""
    return TEXTS[key][language_of(language_code)]
