"""The packages form a stack: no import runs back up, and the two directions never meet.

From the bottom: the shared leaves (`bot.common`) and storage; the job engine; the amoCRM
clients; what both directions of a chat share (`bot.chat`); then customer (Telegram → amoCRM),
manager (amoCRM → Telegram) and staff side by side, which never import one another; aiogram's
handlers; the listener and the composition root (app, launch) on top. The top of `bot/` holds
only the composition root and the packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RANKS = {
    "common": 0,
    "jobs": 1,
    "amocrm": 2,
    "chat": 3,
    "customer": 4,
    "manager": 4,
    "staff": 4,
    "handlers": 5,
    "listener": 6,
    "top": 7,
}
COMPOSITION_ROOT = {"bot", "bot.app", "bot.bridge", "bot.launch", "bot.__main__"}


def layer(module: str) -> tuple[str, int]:
    """The layer a module belongs to, and its height in the stack."""
    if module.startswith("storage"):
        return "common", 0
    if module.startswith("handlers"):
        return "handlers", RANKS["handlers"]
    if module in COMPOSITION_ROOT:
        return "top", RANKS["top"]
    package = module.split(".")[1]
    return package, RANKS[package]


def test_the_top_of_bot_holds_only_the_composition_root_and_packages() -> None:
    modules_there = {p.stem for p in (ROOT / "bot").glob("*.py")}
    assert modules_there == {"__init__", "__main__", "app", "bridge", "launch"}


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


def test_the_product_never_imports_the_simulators() -> None:
    # Only `make demo` (simulators/demo.py) runs them beside the bridge, in its own process.
    found = modules()
    offenders = [
        name
        for name, path in found.items()
        if any(
            isinstance(node, ast.ImportFrom | ast.Import)
            and any(
                (getattr(node, "module", None) or alias.name).startswith("simulators")
                for alias in node.names
            )
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert offenders == []
