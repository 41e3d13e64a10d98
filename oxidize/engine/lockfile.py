"""``oxidize.lock``: what a recipe was built from and what it produced, in a file to commit.

Like ``Cargo.lock`` or ``dvc.lock``, the lock file pins a build: with it committed, a
reviewer sees in a diff that a change of the event log or of ``epochs`` changed the
weights, and CI can prove that a build reproduces what was committed
(``OXIDIZE_LOCKED=1 doit``, or ``doit stale --locked``).

**Where.** Beside the recipe, not under ``build/``: ``recipes/<name>/oxidize.lock`` for
``recipes/<name>/oxidize.yaml``, ``recipes/<name>.lock`` for ``recipes/<name>.yaml``, and
``.patina/oxidize.lock`` for patina's recipe. DESIGN.md placed it at
``build/<recipe>/oxidize.lock``, but ``build/`` is git-ignored and a lock is only worth
something committed (docs/ci.md says more).

**What** (format ``version = 1``), every value a content digest or a count:

* ``recipe``, ``recipe_hash`` — sha256 of the recipe's *settings* after defaults (the
  dicts each stage is checked against), not of the file's bytes: a comment or a default
  written out does not change it;
* ``[eventlog]`` — ``events``, ``max_seq``, and ``sha256`` over the canonical rows in
  ``seq`` order (``seq, event_type, timestamp, source_id, source_file, data`` as JSON with
  sorted keys): the same events give the same digest in SQLite or JSONL, vacuumed or not;
* ``[model]`` — ``name`` and ``fingerprint`` (from ``model.json``);
* ``[projections.<P>]`` — ``triplets`` (count) and the sha256 of ``triplets.npy``,
  ``embeddings.npy`` and ``weights.safetensors``, ``final_loss`` (``repr`` of the last
  epoch's loss) and the ``oxidize_version`` that trained it.

**How it stays diff-friendly.** Sections and keys sorted (``version`` first), one
``key = value`` per line, TOML syntax; no timestamps, no absolute paths, no durations.

**Locked mode.** With ``OXIDIZE_LOCKED`` set (to anything but ``""``/``0``), the lock task
compares instead of writing, on every run, and fails naming each differing field
(committed vs built). :func:`compare` is shared with ``doit stale --locked``.

Light on purpose (``hashlib``, ``json``): the task graph names :func:`build_lock`, so this
module is imported whenever doit loads tasks; the event log and the recipe are read only
inside the functions.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

from oxidize.errors import BuildError, OxidizeError

#: The lock file format written by this module.
LOCK_VERSION = 1
#: Environment variable switching the lock task from "write" to "compare".
LOCKED_ENV = "OXIDIZE_LOCKED"

_HEADER = """\
# oxidize.lock: what recipe {name!r} was built from and what the build produced.
# Written by `doit` (task {name}:lock). Commit it; CI checks builds against it with
# `OXIDIZE_LOCKED=1 doit` or `doit stale --locked`. Do not edit by hand.
"""


def locked() -> bool:
    """True when ``$OXIDIZE_LOCKED`` asks for locked mode."""
    return os.environ.get(LOCKED_ENV, "").strip() not in ("", "0")


class LockedModeCheck:
    """doit ``uptodate`` entry of a lock task: in locked mode it always runs (returns False).

    Outside locked mode it returns ``None``, which doit ignores. Locked mode must compare
    even when nothing was rebuilt (a cache hit in CI): the committed lock may be newer.
    """

    def __call__(self) -> bool | None:
        return False if locked() else None

    def __repr__(self) -> str:  # shown by `doit info`
        return f"LockedModeCheck(${LOCKED_ENV})"


def lock_path(recipe_file: Path | str) -> Path:
    """Where the lock of the recipe in ``recipe_file`` lives (see the module docstring)."""
    recipe_file = Path(recipe_file)
    if recipe_file.name == "oxidize.yaml":
        return recipe_file.with_name("oxidize.lock")
    return recipe_file.with_suffix(".lock")


def recipe_settings(recipe) -> dict[str, Any]:
    """Every recipe key any stage reads, flat (``projections.P.epochs`` → 10), after defaults."""
    settings: dict[str, Any] = dict(recipe.model_settings())
    for name in sorted(recipe.projections):
        proj = recipe.projections[name]
        settings.update(proj.pair_settings())
        settings.update(proj.train_settings())
    return settings


def recipe_hash(recipe) -> str:
    from oxidize.engine.fingerprint import digest

    return digest(recipe_settings(recipe))


# --------------------------------------------------------------------------- fingerprints


def eventlog_fingerprint(path: Path | str) -> dict[str, Any]:
    """``{"events", "max_seq", "sha256"}`` of the event log at ``path`` (one snapshot), over
    the rows as stored (:meth:`oxidize.eventlog.EventLog.digest`): a row no projection
    reads, or one whose text the pairs step skips, never stops the lock step."""
    from oxidize.eventlog import open_eventlog

    with open_eventlog(path) as log:
        count, max_seq, sha = log.digest()
    return {"events": count, "max_seq": max_seq, "sha256": sha}


def _sha256(path: Path) -> str | None:
    from oxidize.engine.fingerprint import file_sha256

    return file_sha256(path) if path.is_file() else None


def _npy_rows(path: Path) -> int | None:
    """Rows of a ``.npy`` file, from its header alone (numpy is not imported here)."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
            if magic[:6] != b"\x93NUMPY":
                return None
            size = 2 if magic[6] == 1 else 4
            header_len = int.from_bytes(handle.read(size), "little")
            header = ast.literal_eval(handle.read(header_len).decode("latin1"))
        return int(header["shape"][0])
    except (OSError, ValueError, SyntaxError, KeyError, IndexError, TypeError):
        return None


def compute_lock(recipe, root: Path | str = ".") -> dict[str, dict[str, Any]]:
    """The lock of ``recipe`` from the current build outputs under ``root``.

    Returns ``{section: {key: value}}`` with section ``""`` for the top level. A value that
    cannot be known (an output not built yet) is ``None`` and is left out of the file.
    """
    from oxidize.engine.layout import Layout, eventlog_path

    root = Path(root)
    lock: dict[str, dict[str, Any]] = {
        "": {"version": LOCK_VERSION, "recipe": recipe.name, "recipe_hash": recipe_hash(recipe)}}
    log = eventlog_path(recipe, root)
    try:
        lock["eventlog"] = eventlog_fingerprint(log)
    except OxidizeError as err:  # the real cause ("database is locked", a missing file…)
        raise BuildError(f"{recipe.name}:lock: cannot read the event log: {err}") from None
    model: dict[str, Any] = {"name": recipe.embedding_model, "fingerprint": None}
    try:
        model_json = json.loads((root / Layout(recipe.name, "").model_json).read_text(encoding="utf-8"))
        model["fingerprint"] = model_json.get("fingerprint")
    except (OSError, ValueError, AttributeError):
        pass
    lock["model"] = model
    for proj_name in sorted(recipe.projections):
        out = Layout(recipe.name, proj_name)
        try:
            training = json.loads((root / out.training_json).read_text(encoding="utf-8"))
            final_loss = repr(float(training["losses"][-1]))
            version = training.get("oxidize_version")
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            final_loss = version = None
        lock[f"projections.{proj_name}"] = {
            "triplets": _npy_rows(root / out.triplets),
            "triplets_sha256": _sha256(root / out.triplets),
            "embeddings_sha256": _sha256(root / out.embeddings),
            "weights_sha256": _sha256(root / out.weights),
            "final_loss": final_loss,
            "oxidize_version": version,
        }
    return lock


# --------------------------------------------------------------------------- text form


def _toml_value(key: str, value: Any) -> str:
    if key == "final_loss":
        # The repr of the float, written as a TOML float (nan/inf are TOML too).
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=True)


def _section_key(name: str) -> str:
    """A TOML table header: ``projections."my.proj"`` when the name needs quoting."""
    head, _, rest = name.partition(".")
    if not rest:
        return head
    bare = all(ch.isalnum() or ch in "-_" for ch in rest)
    return f"{head}.{rest if bare else json.dumps(rest)}"


def render_lock(lock: dict[str, dict[str, Any]]) -> str:
    """The lock as text: header comment, ``version`` first, then sorted keys and sections."""
    top = lock[""]
    lines = [_HEADER.format(name=top["recipe"]).rstrip("\n"), f"version = {top['version']}"]
    lines += [f"{k} = {_toml_value(k, v)}" for k, v in sorted(top.items()) if k != "version" and v is not None]
    for section in sorted(s for s in lock if s):
        lines += ["", f"[{_section_key(section)}]"]
        lines += [f"{k} = {_toml_value(k, v)}" for k, v in sorted(lock[section].items()) if v is not None]
    return "\n".join(lines) + "\n"


def parse_lock(text: str, path: Path | str = "oxidize.lock") -> dict[str, str]:
    """A lock file as ``{"section.key": raw value text}`` (``key`` alone at the top level).

    Only the subset :func:`render_lock` writes is read: comments, ``[section]`` headers and
    ``key = value`` lines. Values are compared as text, which is exact for digests and for
    the ``repr`` of a float.

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
            section = line[1:-1].strip().replace('"', "")
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise BuildError(f"{path}: line {lineno}: expected `key = value` or `[section]`, found {line!r}; "
                             "delete the file and run `doit` to write it again")
        flat[f"{section}.{key.strip()}" if section else key.strip()] = value.strip()
    return flat


def compare(committed: str, built: str, path: Path | str) -> list[tuple[str, str | None, str | None]]:
    """``(field, committed, built)`` for every field that differs, sorted by field."""
    old, new = parse_lock(committed, path), parse_lock(built, path)
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


# --------------------------------------------------------------------------- the task action


def build_lock(recipe_file: str, recipe_name: str, lock_file: str):
    """doit action of ``R:lock``: write the lock, or in locked mode compare with it.

    Returns doit's ``TaskFailed`` (message only, no traceback) when the build does not
    match the committed lock, or when an oxidize error occurs.
    """
    from doit.exceptions import TaskFailed

    from oxidize.atomic import write_text
    from oxidize.recipe import load_recipe

    try:
        recipe = load_recipe(Path(recipe_file), recipe_name)
        lock = compute_lock(recipe, Path.cwd())
        _check_complete(lock, recipe_name)
        _check_same_snapshot(lock, recipe, Path.cwd())
        text = render_lock(lock)
        path = Path(lock_file)
        if not locked():
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                write_text(path, text)
            print(f"{recipe_name}:lock: {lock_file} written", flush=True)
            return None
        if not path.is_file():
            raise BuildError(f"{lock_file}: no committed lock file, and {LOCKED_ENV} is set; run `doit` "
                             f"without {LOCKED_ENV} and commit {lock_file}")
        diffs = compare(path.read_text(encoding="utf-8"), text, path)
        if diffs:
            lines = "\n".join(f"  {field}: committed {old or '(absent)'} vs built {new or '(absent)'}"
                              for field, old, new in diffs)
            raise BuildError(f"{lock_file}: this build does not match the committed lock "
                             f"({len(diffs)} field{'s' if len(diffs) != 1 else ''} differ):\n{lines}\n"
                             f"If the change is intended, run `doit` without {LOCKED_ENV} and commit "
                             f"the new {lock_file}.")
        print(f"{recipe_name}:lock: build matches {lock_file}", flush=True)
        return None
    except OxidizeError as err:  # the reporter prints it, once
        return TaskFailed(f"oxidize: {err}")


def _check_complete(lock: dict[str, dict[str, Any]], recipe_name: str) -> None:
    """A lock is written only from a complete build (its task depends on every output)."""
    missing = [f"{section}.{key}" for section, values in lock.items() for key, value in values.items()
               if value is None]
    if missing:
        raise BuildError(f"{recipe_name}:lock: cannot lock an incomplete build; missing "
                         f"{', '.join(sorted(missing))}; run `doit {recipe_name}`")


def _check_same_snapshot(lock: dict[str, dict[str, Any]], recipe, root: Path) -> None:
    """The log read now must be the one the pairs were built from (patina may append meanwhile)."""
    from oxidize.engine.layout import Layout

    now = (lock["eventlog"]["events"], lock["eventlog"]["max_seq"])
    for proj_name in sorted(recipe.projections):
        pairs_json = root / Layout(recipe.name, proj_name).pairs_json
        try:
            stats = json.loads(pairs_json.read_text(encoding="utf-8"))
            built = (int(stats["event_count"]), int(stats["max_seq"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a pair type that records no counts: nothing to compare
        if built != now:
            # Not stuck: without its pairs.json the pairs task rebuilds on the next `doit`.
            for other in sorted(recipe.projections):
                (root / Layout(recipe.name, other).pairs_json).unlink(missing_ok=True)
            raise BuildError(f"{recipe.name}:lock: the event log changed during the build: "
                             f"{pairs_json} was built from {built[0]} events (last seq {built[1]}), "
                             f"the log now has {now[0]} (last seq {now[1]}); run `doit` again")
