"""Checks for recipe values: typed validators whose errors name the file and the key path.

Why a module of its own: :mod:`oxidize.recipe` says *which* keys a recipe has (one table per
level) and what they mean; this module is the machinery those tables are written in — where
a value sits (:class:`_Where`), one table row (:class:`Key`), reading a mapping against a
table (:func:`_read_block`) and the small typed checks (``_int``, ``_float``, ``_choice``,
``_path``…) that say what was expected and what was found. The names keep their leading
underscore: they are oxidize.recipe's helpers, not an API.

Standard library only: this is imported whenever doit lists tasks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oxidize.errors import RecipeError

#: The default of a key that must be given.
_REQUIRED = object()


@dataclass(frozen=True)
class _Where:
    """Where a value sits: the recipe file, its dotted key path and its projection's name."""

    path: Path
    key: str | None
    projection: str = ""

    def child(self, key: object) -> _Where:
        return _Where(self.path, f"{self.key}.{key}" if self.key else str(key), self.projection)

    def fail(self, message: str) -> RecipeError:
        return RecipeError(self.path, self.key, message)


@dataclass(frozen=True)
class Key:
    """One row of a key table.

    Attributes:
        check: ``check(value, where)`` returns the value to store or raises RecipeError.
        default: the value when the key is left out, or a callable ``default(where)``
            when it depends on context (e.g. ``pair_type`` on the projection's name).
        stages: the build stages (``"model"``, ``"pairs"``, ``"train"``) whose up-to-date
            check includes this key.
        missing: the message for a required key (one without a default) left out.
    """

    check: Callable[[Any, _Where], Any]
    default: Any = _REQUIRED
    stages: tuple[str, ...] = ()
    missing: str = "missing required key"


def _read_block(data: object, table: dict[str, Key], where: _Where,
                elsewhere: tuple[dict[str, Key], str] | None = None) -> dict[str, Any]:
    """Check a mapping against ``table``: no unknown keys, each value valid, defaults filled.

    ``elsewhere`` is a (table, hint) for keys that are valid one level up or down, so
    ``learning_rate`` under a projection says it belongs under ``training:``.
    """
    if not isinstance(data, dict):
        at = "" if where.key else " at the top level (with 'version: 1' and 'projections')"
        raise where.fail(f"expected a mapping{at}, found {_found(data)}")
    for key in data:
        if not isinstance(key, str):
            raise where.fail(f"key {_short(key)} is {_found(key)}; keys must be strings")
        if key not in table:
            if elsewhere and key in elsewhere[0]:
                raise where.child(key).fail(f"unknown key {key!r} here; {elsewhere[1]}")
            raise where.child(key).fail(f"unknown key {key!r}; {_suggest(key, table, 'keys')}")
    out: dict[str, Any] = {}
    for key, spec in table.items():
        sub = where.child(key)
        if key in data:
            out[key] = spec.check(data[key], sub)
        elif spec.default is _REQUIRED:
            raise sub.fail(spec.missing)
        else:
            out[key] = spec.default(sub) if callable(spec.default) else spec.default
    return out


def _suggest(word: str, valid: Iterable[object], what: str) -> str:
    """"did you mean 'epochs'?" for a close match, else the list of valid names."""
    import difflib

    names = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(word, names, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid {what} are: {', '.join(names)}" if names else f"there are no {what}"




_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", tuple: "a list", dict: "a mapping"}


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _found(value: object) -> str:
    """What a value is, for "expected X, found Y": ``an integer (0)``, ``null``, ``a list``."""
    if value is None:
        return "null"
    kind = _TYPE_NAMES.get(type(value), f"a {type(value).__name__}")
    return kind if isinstance(value, (dict, list, tuple)) else f"{kind} ({_short(value)})"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # YAML's true is not 1


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any, _Where], int]:
    expected = "an integer" + (f" >= {minimum}" if minimum is not None else "") + \
        (f" and <= {maximum}" if maximum is not None else "")

    def check(value: Any, where: _Where) -> int:
        if (not _is_int(value) or (minimum is not None and value < minimum)
                or (maximum is not None and value > maximum)):
            raise where.fail(f"expected {expected}, found {_found(value)}")
        return value
    return check


def _float(minimum: float, above: bool = False, below: float | None = None) -> Callable[[Any, _Where], float]:
    """A finite number ``>= minimum`` (``> minimum`` if ``above``) and ``< below``; ints allowed."""
    expected = f"a number {'>' if above else '>='} {minimum:g}"
    expected += f" and < {below:g}" if below is not None else ""

    def check(value: Any, where: _Where) -> float:
        try:
            number = float(value) if _is_int(value) or isinstance(value, float) else None
        except OverflowError:
            number = None
        if (number is None or not math.isfinite(number) or number < minimum
                or (above and number == minimum) or (below is not None and number >= below)):
            raise where.fail(f"expected {expected}, found {_found(value)}{_exponent_hint(value)}")
        return number
    return check


def _exponent_hint(value: Any) -> str:
    """PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string, not a number."""
    if not isinstance(value, str) or "e" not in value.lower():
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return f"; YAML reads {value!r} as text: write the number with a dot, as in 1.0e-3"


def _string(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.fail(f"expected a non-empty string, found {_found(value)}")
    return value


def _bool(value: Any, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.fail(f"expected true or false, found {_found(value)}")
    return value


def _choice(*options: str) -> Callable[[Any, _Where], str]:
    def check(value: Any, where: _Where) -> str:
        if not isinstance(value, str) or value not in options:
            import difflib

            hint = f"; did you mean {close[0]!r}?" if isinstance(value, str) and (
                close := difflib.get_close_matches(value, options, n=1)) else ""
            raise where.fail(f"expected one of {', '.join(options)}, found {_found(value)}{hint}")
        return value
    return check


def _optional(check: Callable[[Any, _Where], Any]) -> Callable[[Any, _Where], Any]:
    return lambda value, where: None if value is None else check(value, where)


def _path(value: Any, where: _Where) -> Path:
    """A path written relative to the recipe's directory, stored absolute (``~`` expanded)."""
    if not isinstance(value, str) or not value:
        raise where.fail(f"expected a path (a non-empty string), found {_found(value)}")
    return Path(os.path.abspath(where.path.parent / Path(value).expanduser()))


@dataclass(frozen=True)
class GitSource:
    """``eventlog: {git: PATH}``: a git repository whose history the build scrapes into an
    event log of its own (oxidize/gitlog/scrape.py). ``repo`` is absolute."""

    repo: Path
    #: ``notes: GLOB`` — Markdown files (paths in the repository) read as sessions.
    notes: str | None = None


def _eventlog_source(value: Any, where: _Where) -> Path | GitSource:
    """``eventlog:`` — a path to an event log, or ``{git: PATH}`` (both relative to the recipe)."""
    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k not in ("git", "notes"))
        if unknown or "git" not in value:
            raise where.fail(f"expected {{git: PATH}} (a git repository, relative to the recipe; "
                             f"optional notes: GLOB), found the key(s) {', '.join(unknown) or 'none'}")
        notes = value.get("notes")
        if notes is not None and (not isinstance(notes, str) or not notes.strip()):
            raise where.fail(f"notes: expected a glob of Markdown files in the repository, e.g. "
                             f"'layer/sessions/*.md', found {_found(notes)}")
        return GitSource(_path(value["git"], where), notes)
    if not isinstance(value, str):
        raise where.fail(f"expected a path to an event log or {{git: PATH}}, found {_found(value)}")
    return _path(value, where)
