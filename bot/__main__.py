# Until the event loop takes them over, a stop signal is only remembered: raised inside an
# import it could be swallowed, or leave a traceback. So this comes before any other import.
import signal  # isort: skip

_signals: list[int] = []


def remember_stop_signals() -> None:
    """From now until the event loop handles them, SIGTERM and SIGINT are only remembered."""
    _signals.clear()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: _signals.append(signum))


remember_stop_signals()

import asyncio  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from bot.common.settings import SettingsError, load_settings  # noqa: E402

# How long threads that are ending anyway may take before the process ends without them.
LINGER_SECONDS = 2.0


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
    if _signals:
        return 0
    from bot.launch import main  # noqa: PLC0415 - settings first: a bad one exits at once

    return asyncio.run(main(settings, early_signal=lambda: bool(_signals)))


def leave(code: int) -> int:
    """`code`, and the process ends with it even if a thread is still open.

    A thread nobody closed (a library's, or a bug) would keep the interpreter waiting for it
    after a failed start: systemd would see the service running, not listening, and never
    restart it.
    """
    deadline = time.monotonic() + LINGER_SECONDS
    lingering = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))  # one that is ending anyway
        if thread.is_alive():
            lingering.append(thread.name)
    if not lingering:
        return code
    logging.getLogger("bot").warning(
        "exiting (%d) although thread(s) %s did not end", code, ", ".join(lingering)
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(leave(run()))
