"""Forks bridge processes that already imported aiogram (a cold start costs seconds of CPU).

Commands on stdin, one JSON object per line, one answer line each:
`{"spawn": {"log": path, "env": {...}, "cwd": path}}` → the child's pid;
`{"poll": pid}` → its exit status, or null while it runs; `{"wait": pid}` → its exit status
(negative: killed by that signal). The child runs the real `python -m bot` entry point
(`bot.__main__.run`) with exactly the given environment and working directory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import bot.app  # noqa: F401 - imported here so every child starts warm
from bot.__main__ import remember_stop_signals, run

# Importing the entry point made stop signals only remembered: the zygote itself stops on them.
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, signal.SIG_DFL)


def _spawn(log_path: str, env: dict[str, str], cwd: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        remember_stop_signals()
        code = run()
    except BaseException:
        code = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


_REAPED: dict[int, int] = {}


def _reap(pid: int, flags: int) -> int | None:
    if pid in _REAPED:
        return _REAPED[pid]
    found, status = os.waitpid(pid, flags)
    if found == 0:
        return None
    _REAPED[pid] = os.waitstatus_to_exitcode(status)
    return _REAPED[pid]


def _answer(request: dict[str, Any]) -> Any:
    if "spawn" in request:
        spawn = request["spawn"]
        return _spawn(spawn["log"], spawn["env"], spawn["cwd"])
    if "poll" in request:
        return _reap(int(request["poll"]), os.WNOHANG)
    return _reap(int(request["wait"]), 0)


def main() -> None:
    """Serve requests until stdin closes."""
    for line in sys.stdin:
        print(json.dumps(_answer(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
