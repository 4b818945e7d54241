import asyncio
import signal
import sys
from types import FrameType

from bot.common.settings import SettingsError, load_settings

_signals: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _signals.append(signum)


def run() -> int:
    """Check the settings before the heavy imports, then run the bridge.

    Exit codes: 0 stopped (SIGTERM, SIGINT), 2 fix the settings (every problem is named),
    1 an unexpected failure (a bug: its traceback is logged).
    """
    # Until the event loop takes them over, a stop signal is only remembered: raised inside an
    # import it could be swallowed, or leave a traceback.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _remember)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2
    if _signals:
        return 0
    from bot.launch import main  # noqa: PLC0415 - settings first: a bad one exits at once

    return asyncio.run(main(settings, early_signal=lambda: bool(_signals)))


if __name__ == "__main__":
    raise SystemExit(run())
