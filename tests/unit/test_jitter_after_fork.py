"""Backoff jitter differs between processes forked from one parent (the tests' zygote)."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import ROOT

SCRIPT = """
import os
from bot.jobs.worker import Backoff

draws = []
for _ in range(3):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, repr(Backoff().delay(3)).encode())
        os._exit(0)
    os.close(write)
    draws.append(os.read(read, 100).decode())
    os.waitpid(pid, 0)
print(" ".join(draws))
"""


def test_forked_children_draw_different_jitter() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    draws = done.stdout.split()
    assert len(draws) == 3 and len(set(draws)) == 3, draws
