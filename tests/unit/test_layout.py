"""The packages form a stack: no import runs back up, and the two directions never meet.

From the bottom: shared leaf modules and storage; the job engine; the amoCRM clients; the
modules both directions use (notices, reactions); then customer (Telegram → amoCRM), manager
(amoCRM → Telegram) and staff side by side, which never import one another; aiogram's
handlers; the composition root (app, launch, web, middlewares) on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = {
    "bot",
    "bot.settings",
    "bot.limits",
    "bot.ids",
    "bot.phones",
    "bot.texts",
    "bot.health",
    "bot.metrics",
    "bot.telegram_text",
    "bot.bots",
}
BOTH_DIRECTIONS = {"bot.notices", "bot.reactions"}
TOP = {"bot.app", "bot.launch", "bot.web", "bot.listener_guard", "bot.middlewares", "bot.__main__"}
RANKS = {"shared": 0, "jobs": 1, "amocrm": 2, "both": 3, "customer": 4, "manager": 4, "staff": 4}


def layer(module: str) -> tuple[str, int]:
    """The layer a module belongs to, and its height in the stack."""
    if module.startswith("storage") or module in SHARED:
        return "shared", 0
    if module in BOTH_DIRECTIONS:
        return "both", RANKS["both"]
    if module.startswith("handlers"):
        return "handlers", 5
    if module in TOP:
        return "top", 6
    package = module.split(".")[1]
    return package, RANKS[package]


def modules() -> dict[str, Path]:
    found = {}
    for top in ("bot", "handlers", "storage"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every project module `path` imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    known = modules()
    return {name for name in names if name in known}


def test_every_package_says_what_it_is_for() -> None:
    for path in (ROOT / "bot").glob("*/__init__.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring.splitlines()) == 1, path
        assert path.read_text().strip().count("\n") == 0, f"{path}: only the docstring"


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_import_runs_back_up_or_sideways(module: str) -> None:
    own, height = layer(module)
    for imported in imports_of(modules()[module]):
        other, other_height = layer(imported)
        if other == own:
            continue
        assert other_height < height, f"{module} ({own}) imports {imported} ({other})"
