"""The programs that run inside containers, each a real file (shell or Python) in this folder.

One subfolder per container role (programs/README.md). Components load a program's text with
`text()` and hand it to the container (`sh -c <text> ...`, `python3 -c <text> ...`, an upload,
an exec); what a program needs (paths, ports, names) reaches it as environment variables or
positional arguments that the component fills from its own constants, so each constant is
defined once, in Python. Every file here is linted (ruff, mypy --strict, shellcheck -x) and
part of the deploy fingerprint (release/record.py `program_sources`).
"""

from __future__ import annotations

from pathlib import Path

#: This folder: every program is a file under it.
ROOT = Path(__file__).resolve().parent


def path(relative: str) -> Path:
    """The program file `relative` (e.g. `routing/swap.sh`); raises when it does not exist."""
    found = (ROOT / relative).resolve()
    if ROOT not in found.parents or not found.is_file():
        raise FileNotFoundError(f"programs/{relative}: no such program")
    return found


def text(relative: str) -> str:
    """The text of the program file `relative`, exactly as it is in the repository."""
    return path(relative).read_text(encoding="utf-8")
