"""The text of ``oxidize.lock``: TOML's subset the lock uses, written sorted and read back flat.

One renderer for every lock (:func:`render_flat`): a header comment, ``version`` first, the
other top-level keys sorted, then each ``[section]`` sorted with its keys sorted — so the same
content is the same bytes, and a diff shows only what changed. Values are kept as their TOML
text when read (:func:`parse_lock`), which compares digests and float ``repr``s exactly and
lets a lock carry other platforms' entries through a rewrite untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oxidize.errors import BuildError

_HEADER = """\
# oxidize.lock: what recipe {name!r} was built from and what the build produced.
# Written by `doit` (task {name}:lock). Commit it; CI checks builds against it with
# `OXIDIZE_LOCKED=1 doit` or `doit stale --locked`. Do not edit by hand.
"""


def toml_value(key: str, value: Any) -> str:
    if key == "final_loss":
        # The repr of the float, written as a TOML float (nan/inf are TOML too).
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=True)


def section_key(*parts: str) -> str:
    """A TOML table header from its parts, each quoted when it is not a bare key."""
    return ".".join(p if p and all(ch.isalnum() or ch in "-_" for ch in p) else json.dumps(p)
                    for p in parts)


def flatten(lock: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{section: {key: value}}`` (section ``""`` = top level) as ``{"section.key": text}``."""
    return {(f"{section}.{key}" if section else key): toml_value(key, value)
            for section, values in lock.items() for key, value in values.items() if value is not None}


def render_flat(flat: dict[str, str], recipe: str) -> str:
    """The lock file's text (keys never hold a dot, so a flat key splits at its last dot)."""
    top = {k: v for k, v in flat.items() if "." not in k}
    sections: dict[str, dict[str, str]] = {}
    for key, value in flat.items():
        if "." in key:
            section, _, name = key.rpartition(".")
            sections.setdefault(section, {})[name] = value
    lines = [_HEADER.format(name=recipe).rstrip("\n"), f"version = {top['version']}"]
    lines += [f"{k} = {v}" for k, v in sorted(top.items()) if k != "version"]
    for section in sorted(sections):
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {v}" for k, v in sorted(sections[section].items())]
    return "\n".join(lines) + "\n"


def read_lock(path: Path | str, shown: Path | str | None = None) -> dict[str, str]:
    """:func:`parse_lock` of the file at ``path`` (``shown``: its name in messages).

    Raises:
        BuildError: the file is not UTF-8 text, or not a lock (names the file).
    """
    from oxidize.errors import BuildError

    shown = shown or path
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BuildError(f"{shown}: not a lock file (not UTF-8 text: bad byte at offset {exc.start}); "
                         f"`doit` writes it: restore it from git, or delete it and run `doit`") from None
    except OSError as exc:
        raise BuildError(f"{shown}: cannot read the lock file ({exc.strerror or exc})") from None
    return parse_lock(text, shown)


def parse_lock(text: str, path: Path | str = "oxidize.lock") -> dict[str, str]:
    """A lock file as ``{"section.key": raw value text}`` (``key`` alone at the top level).

    Only the subset :func:`render_flat` writes is read: comments, ``[section]`` headers and
    ``key = value`` lines; a header is kept as written (quotes and all).

    Raises:
        BuildError: a line is none of these (names the file and line).
    """
    flat: dict[str, str] = {}
    section = ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise BuildError(f"{path}: line {lineno}: expected `key = value` or `[section]`, found {line!r}; "
                             "delete the file and run `doit` to write it again")
        flat[f"{section}.{key.strip()}" if section else key.strip()] = value.strip()
    return flat


def compare(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """``(field, old, new)`` for every field that differs, sorted by field."""
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
