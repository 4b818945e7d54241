"""Loopback simulators of the Telegram Bot API, the amojo Chats API and amoCRM REST.

The tests run the real bridge against them, and `make demo` shows it working with them.
"""

from simulators.amojo import FakeAmojo, sign_request
from simulators.crm import FakeCrm
from simulators.telegram import FakeTelegram, RecordedCall

__all__ = ["FakeAmojo", "FakeCrm", "FakeTelegram", "RecordedCall", "sign_request"]
