"""The shipped cell specs (`<name>.yaml` in this folder)."""

from __future__ import annotations

from pathlib import Path

CELLS_DIR = Path(__file__).parent


def names() -> list[str]:
    return sorted(p.stem for p in CELLS_DIR.glob("*.yaml"))


def path(name: str) -> Path:
    return CELLS_DIR / f"{name}.yaml"
