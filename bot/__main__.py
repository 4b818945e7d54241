import asyncio
import sys

from bot.settings import SettingsError, load_settings


def run() -> int:
    """Check the settings before the heavy imports, then run the bridge.

    Exit codes: 0 stopped (SIGTERM, SIGINT), 2 fix the settings (every problem is named),
    1 an unexpected failure (a bug: its traceback is logged).
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2
    from bot.launch import main  # noqa: PLC0415 - settings first: a bad one exits at once

    return asyncio.run(main(settings))


if __name__ == "__main__":
    raise SystemExit(run())
