"""Forks bridge processes that already imported aiogram (a cold start costs seconds of CPU).

Commands on stdin, one per line: `spawn <log path>` → prints the child's pid;
`wait <pid>` → prints its exit status (negative: killed by that signal). The child runs the real
`python -m bot` entry point (`bot.__main__.run`) with this process's environment.
"""

from __future__ import annotations

import os
import sys

import bot.app  # noqa: F401 - imported here so every child starts warm
from bot.__main__ import run


def _spawn(log_path: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        code = run()
    except BaseException:
        code = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Serve spawn/wait commands until stdin closes."""
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "spawn":
            print(_spawn(arg), flush=True)
        elif command == "wait":
            _, status = os.waitpid(int(arg), 0)
            print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main()
