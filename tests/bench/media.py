"""Manager media in flight: peak memory of a real `python -m bot` while it sends large files.

A: 32 different 49 MB files, one to each of 32 chats, all hooks at once.
B: a Salesbot broadcast: one 49 MB file to 32 more chats (downloaded once, then by file_id).
The fakes run in this process; the bridge's peak RSS (VmHWM) is read from /proc.

    python -m tests.bench.media [--files 32] [--megabytes 49]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import IO

from simulators.amojo import FakeAmojo
from simulators.crm import FakeCrm
from simulators.factories import private_message_update
from simulators.telegram import FakeTelegram
from tests.bench.inbound import REPO_ROOT, bridge_command, peak_rss_mb, stop_bridge, wait_polling
from tests.harness import (
    ACCOUNT_ID,
    CHANNEL_ID,
    CHANNEL_SECRET,
    CRM_TOKEN,
    TOKEN,
    Fakes,
    bridge_env,
    free_port,
)


async def send_files(
    fakes: Fakes, url: str, chats: list[int], media: list[str], size: int
) -> float:
    """Post one file hook per chat at once; seconds until every one was delivered (status 1)."""
    amojo = fakes.amojo
    hooks = [
        amojo.message_hook(
            f"tg-{chat}", msg_type="video", media=link, file_name="clip.mp4", file_size=size
        )
        for chat, link in zip(chats, media, strict=True)
    ]
    started = time.monotonic()
    answers = await asyncio.gather(*(amojo.post_hook(url, amojo.scope_id, hook) for hook in hooks))
    assert all(status == 200 for status, _ in answers), answers
    ids = [hook["message"]["message"]["id"] for hook in hooks]
    await amojo.wait_for(
        lambda: all(
            any(s.get("status") == 1 for s in amojo.statuses_for(amo_id)) for amo_id in ids
        ),
        timeout=600,
        what="every file delivered",
    )
    return time.monotonic() - started


async def bench(files: int, megabytes: int) -> None:
    size = megabytes * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bridge-media-") as tmp:
        log_path = Path(tmp) / "bridge.log"
        async with (
            FakeTelegram(TOKEN) as telegram,
            FakeAmojo(CHANNEL_ID, CHANNEL_SECRET, ACCOUNT_ID) as amojo,
            FakeCrm(CRM_TOKEN, ACCOUNT_ID) as crm,
        ):
            fakes = Fakes(telegram=telegram, amojo=amojo, crm=crm)
            port = free_port()
            env = {**os.environ, **bridge_env(fakes, Path(tmp) / "bridge.sqlite3", port)}
            log: IO[bytes]
            with open(log_path, "wb") as log:  # noqa: ASYNC230
                process = await asyncio.create_subprocess_exec(
                    *bridge_command(None), cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                )
                try:
                    await wait_polling(fakes, process, within=60)
                    chats = list(range(7000, 7000 + 2 * files))
                    for chat in chats:
                        telegram.push_update(private_message_update(chat, 1, text="hi"))
                    await amojo.wait_for(lambda: len(amojo.messages) == len(chats), timeout=60)
                    url = f"http://127.0.0.1:{port}"
                    idle = peak_rss_mb(process.pid)
                    links = [
                        amojo.add_media(f"clip{n}.mp4", "video/mp4", os.urandom(size))
                        for n in range(files)
                    ]
                    seconds_a = await send_files(fakes, url, chats[:files], links, size)
                    rss_a = peak_rss_mb(process.pid)
                    shared = amojo.add_media("promo.mp4", "video/mp4", os.urandom(size))
                    downloads_before = len(amojo.media_downloads)
                    seconds_b = await send_files(fakes, url, chats[files:], [shared] * files, size)
                    rss_b = peak_rss_mb(process.pid)
                    broadcast_downloads = len(amojo.media_downloads) - downloads_before
                finally:
                    await stop_bridge(process)
        print(f"bridge peak RSS before any media: {idle:.0f} MB")
        print(
            f"A: {files} × {megabytes} MB different files: delivered in {seconds_a:.1f} s, "
            f"peak RSS {rss_a:.0f} MB"
        )
        print(
            f"B: one {megabytes} MB file to {files} chats: delivered in {seconds_b:.1f} s, "
            f"downloaded {broadcast_downloads} time(s), peak RSS {rss_b:.0f} MB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--megabytes", type=int, default=49)
    args = parser.parse_args()
    asyncio.run(bench(args.files, args.megabytes))
