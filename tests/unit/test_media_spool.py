"""Each bridge process spools media in its own folder; a dead process's folder is cleared."""

from __future__ import annotations

from pathlib import Path

from bot.manager.spool import MediaSpool


def test_a_running_bridges_folder_is_left_alone_and_an_abandoned_one_removed(
    tmp_path: Path,
) -> None:
    first = MediaSpool(tmp_path)
    in_flight = first.path / "media-abc"
    in_flight.write_bytes(b"half a video")
    abandoned = tmp_path / "spool-dead"
    abandoned.mkdir()
    (abandoned / "media-old").write_bytes(b"left by kill -9")

    second = MediaSpool(tmp_path)  # another process starting on the same database folder

    assert in_flight.exists()
    assert not abandoned.exists()
    assert second.path != first.path
    first.close()
    second.close()
    assert list(tmp_path.iterdir()) == []
