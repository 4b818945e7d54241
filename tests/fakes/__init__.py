"""Loopback fakes of Telegram Bot API, amojo Chats API and amoCRM REST for end-to-end tests."""

from tests.fakes.amojo import FakeAmojo, sign_request
from tests.fakes.crm import FakeCrm
from tests.fakes.telegram import FakeTelegram, RecordedCall

__all__ = ["FakeAmojo", "FakeCrm", "FakeTelegram", "RecordedCall", "sign_request"]
