"""One root for every error oxidize raises on purpose.

A user's mistake (a bad recipe, a missing model, a broken event log) must reach them as one
readable message that names the file, the key or row, and what was expected — never as a
Python traceback. Everything raised for such a reason derives from :class:`OxidizeError`;
the doit actions and the CLI turn it into a short message and a non-zero exit code.
"""

from __future__ import annotations

from pathlib import Path


class OxidizeError(Exception):
    """Base class: ``str(error)`` is the whole message shown to the user."""


class RecipeError(OxidizeError):
    """A recipe file is malformed or has an invalid value.

    Args:
        path: the recipe file.
        key: dotted key path inside the recipe (``projections.semantic.epochs``), or ``None``
            for an error about the file as a whole.
        message: what is wrong and what was expected.
    """

    def __init__(self, path: Path | str, key: str | None, message: str):
        self.path = Path(path)
        self.key = key
        self.detail = message
        where = f"{_shown(self.path)}" + (f": {key}" if key else "")
        super().__init__(f"{where}: {message}")


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it (as the user typed it)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


class EventLogError(OxidizeError):
    """The event log is missing, is not an event log, or holds unusable rows."""


class ModelError(OxidizeError):
    """An embedding model cannot be found, loaded or used as asked."""


class CacheError(OxidizeError):
    """The embedding cache is unreadable; its message says what may be deleted."""


class TrainingError(OxidizeError):
    """Training cannot start or diverged (e.g. a NaN loss); names projection and epoch."""


class BuildError(OxidizeError):
    """A build-level problem: a lock held by another run, an unsafe output path, …"""


class SearchError(OxidizeError):
    """A search index that is missing, damaged or out of step, or a query that cannot run."""


class CacheWarning(UserWarning):
    """A cache entry or file was unusable and has been dropped or set aside; what it held is
    computed again (shown as one ``oxidize: warning:`` line)."""
