"""The newcomer's documents name every setting the bridge reads, and only those."""

from __future__ import annotations

import re
from pathlib import Path

from bot.common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def readme_settings() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def env_example_settings() -> set[str]:
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    return {line.split("=", 1)[0] for line in lines if re.match(r"[A-Z][A-Z0-9_]*=", line)}


def test_readme_settings_table_is_the_settings_model() -> None:
    assert readme_settings() == set(Settings.model_fields)


def test_env_example_names_every_setting() -> None:
    assert env_example_settings() == set(Settings.model_fields)


def test_links_between_documents_lead_somewhere() -> None:
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#([^)\s]+))?\)", text):
            path, anchor = target
            linked = (doc.parent / path).resolve()
            if not linked.is_file():
                broken.append(f"{doc.name} → {path}")
            elif anchor and anchor not in anchors(linked.read_text(encoding="utf-8")):
                broken.append(f"{doc.name} → {path}#{anchor}")
    assert broken == []


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found
