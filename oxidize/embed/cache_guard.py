"""How the embedding cache's SQLite failures are reported, or healed.

A busy database waits and then says so; a damaged one (oxidize/util/quarantine.py) is moved
aside and replaced by a new cache, the operation run once more: the cache only saves time.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import warnings
from pathlib import Path

from oxidize.errors import CacheError
from oxidize.util.quarantine import is_damage, move_aside

#: Seconds the cache waits for another process holding it (the cache module's too).
BUSY_TIMEOUT_S = 60.0


def _heals(method):
    """Run a cache operation; when it finds the file damaged, move the file aside, start a new
    cache and run the operation once more (oxidize/util/quarantine.py)."""

    @functools.wraps(method)
    def healing(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except CacheError as err:
            if not is_damage(err):
                raise
            self._heal(err)
            return method(self, *args, **kwargs)

    return healing


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def heal(cache, err: CacheError, reopen: bool = True) -> None:
    """Move the damaged file aside (unless another process already did), say so in one
    :class:`~oxidize.embed.cache.CacheWarning`, and (with ``reopen``) start a new cache."""
    from oxidize.errors import CacheWarning

    cache.close()
    if _inode(cache.path) == getattr(cache, "_inode", None):
        cause = err.__cause__ or err
        dest = move_aside(cache.path)
        warnings.warn(f"embedding cache {cache.path} was damaged ({cause}); moved it to {dest} "
                      f"and started a new one: its texts are embedded again", CacheWarning,
                      stacklevel=4)
    if reopen:
        with cache._guard("open"):
            cache._open_once()


class SqliteGuard:
    """Turn sqlite3 errors into a CacheError that names the file and says it may be deleted."""

    def __init__(self, cache, what: str):
        self.cache, self.what = cache, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, sqlite3.Error):
            from oxidize.util.atomic import out_of_room

            room = out_of_room(exc, self.cache.path.parent)
            if room:
                raise CacheError(f"embedding cache {self.cache.path}: cannot {self.what}: {room}; "
                                 f"make room and run `doit` again") from exc
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                detail = (f"it stayed locked by another process for {BUSY_TIMEOUT_S:.0f} s; "
                          f"retry when the other build has finished, or")
                raise CacheError(f"embedding cache {self.cache.path}: cannot {self.what}: {exc}; "
                                 f"{detail} {self.cache._delete_hint()}") from exc
            raise CacheError(f"embedding cache {self.cache.path} is not a usable SQLite database "
                             f"({self.what}: {exc}); {self.cache._delete_hint()}") from exc
        return False
