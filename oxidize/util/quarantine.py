"""Damaged caches and state heal themselves: the damaged file is moved aside, kept for
inspection, named in one warning line, and a new one is started.

Only for files that are caches or bookkeeping (the embedding cache, the optimised-graph
cache, doit's state): deleting them loses nothing but time, so a build should not stop on
them. SQLite reports damage as ``database disk image is malformed`` or ``file is not a
database``; :func:`is_damage` tells those apart from a busy or unwritable database, which is
not damage and must not be moved.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

#: Beside the damaged file: ``<folder>/damaged/<name>.<stamp>``.
FOLDER = "damaged"
_DAMAGE = ("malformed", "not a database", "corrupt", "database disk image")


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says an SQLite file's content is damaged."""
    while exc is not None:
        if isinstance(exc, sqlite3.DatabaseError) or type(exc).__name__ == "DatabaseException":
            text = str(exc).lower()
            if any(word in text for word in _DAMAGE):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def move_aside(path: Path | str, companions: tuple[str, ...] = ("-wal", "-shm", "-journal")) -> Path:
    """Move ``path`` (a file or folder) and its SQLite companions into ``damaged/`` beside it;
    return where it went."""
    path = Path(path)
    folder = path.parent / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = folder / f"{path.name}.{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = folder / f"{path.name}.{stamp}-{n}"
    os.replace(path, dest)
    for suffix in companions:
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            os.replace(extra, dest.with_name(dest.name + suffix))
    return dest
