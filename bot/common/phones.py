"""Phone number normalisation for matching the phones customers share."""

from __future__ import annotations

MIN_PHONE_DIGITS = 7


def phone_digits(raw: str) -> str:
    """Digits only; a Russian trunk prefix 8XXXXXXXXXX becomes 7XXXXXXXXXX."""
    digits = "".join(ch for ch in raw if ch.isdigit())
    if len(digits) == 11 and digits.startswith("8"):
        digits = "7" + digits[1:]
    return digits


def normalise_phone(raw: str) -> str | None:
    """E.164-like `+digits`, or None when there are too few digits to be a phone.

    Phones are matched on this whole form: `+1 916 123-4567` and `+7 916 123-45-67` share
    their last ten digits but are different people.
    """
    digits = phone_digits(raw)
    if len(digits) < MIN_PHONE_DIGITS:
        return None
    return f"+{digits}"


def mask_phone(raw: str) -> str:
    """A phone safe for logs: only the last two digits shown."""
    digits = phone_digits(raw)
    return "*" * max(0, len(digits) - 2) + digits[-2:]
