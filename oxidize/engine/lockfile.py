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

**What** (format ``version = 2``): the inputs — ``recipe_hash`` (the settings after
defaults), ``[eventlog]`` (a digest of the canonical rows), ``[model]``, each projection's
triplets, the oxidize version — and, per platform key (:mod:`oxidize.platform`), the outputs:
``[outputs."<platform>".<P>]`` with the sha256 of the embeddings and weights, the last loss and
the test MRR@10 of the projection and the base. docs/ci.md has the example and the why.

**Locked mode.** With ``OXIDIZE_LOCKED`` set (to anything but ``""``/``0``), the lock task
compares instead of writing, on every run (:func:`check`, shared with ``doit stale
--locked``): inputs exactly; outputs byte for byte where the lock has this platform, else by
test MRR@10 within :data:`METRIC_TOLERANCE` (``OXIDIZE_LOCKED=strict``: fail). Writing keeps
the other platforms' entries while the inputs are unchanged (:func:`merge`).

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

from oxidize.engine.lock_text import compare, flatten, read_lock, render_flat, section_key
from oxidize.errors import BuildError, OxidizeError

#: The lock file format written by this module (2: outputs under the platform key).
LOCK_VERSION = 2
#: A new platform passes locked mode when each projection's test MRR@10 is within this of
#: every recorded platform's. Measured on patina-dev.db, int8 kernels against float32
#: (``OXIDIZE_CPU_FEATURES=-vnni``): docs/ci.md has the figures.
METRIC_TOLERANCE = 0.02
#: Output fields a complete build may lack (no test queries: no metrics), or a lock written
#: before oxidize recorded them (the search chosen on the history questions).
OPTIONAL = frozenset({"test_mrr", "base_mrr", "search"})
#: ``OXIDIZE_LOCKED=strict``: a platform the lock does not have fails instead.
STRICT = "strict"
#: Environment variable switching the lock task from "write" to "compare".
LOCKED_ENV = "OXIDIZE_LOCKED"

def locked() -> bool:
    """True when ``$OXIDIZE_LOCKED`` asks for locked mode."""
    return os.environ.get(LOCKED_ENV, "").strip() not in ("", "0")


def strict() -> bool:
    """True when ``$OXIDIZE_LOCKED=strict``: every platform must be in the lock, byte-exact."""
    return os.environ.get(LOCKED_ENV, "").strip().lower() == STRICT


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


def _metrics(path: Path) -> dict[str, float]:
    """The test MRR@10 of the projection and the base (metrics.json), rounded for the lock."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        return {k: round(float(metrics[k]["mrr@10"]), 6) for k in ("projection", "base") if metrics.get(k)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def compute_lock(recipe, root: Path | str = ".") -> dict[str, dict[str, Any]]:
    """The lock of ``recipe`` from the current build outputs under ``root``.

    Returns ``{section: {key: value}}`` with section ``""`` for the top level. A value that
    cannot be known (an output not built yet) is ``None`` and is left out of the file.
    """
    from oxidize.engine.layout import Layout, build_dir, eventlog_path

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
        model_json = json.loads((root / Layout(recipe.name, "", build_dir(root)).model_json).read_text(encoding="utf-8"))
        model["fingerprint"] = model_json.get("fingerprint")
    except (OSError, ValueError, AttributeError):
        pass
    lock["model"] = model
    from oxidize import __version__
    from oxidize.platform import platform_key

    lock[""]["oxidize_version"] = __version__
    _check_built_from_this_recipe(recipe, root)
    platform = f"{platform_key()}/openblas-{_blas_kernel(recipe, root)}"
    for proj_name in sorted(recipe.projections):
        out = Layout(recipe.name, proj_name, build_dir(root))
        try:
            training = json.loads((root / out.training_json).read_text(encoding="utf-8"))
            final_loss = repr(float(training["losses"][-1]))
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            final_loss = None
        metrics = _metrics(root / out.metrics)
        lock[section_key("projections", proj_name)] = {
            "triplets": _npy_rows(root / out.triplets),
            "triplets_sha256": _sha256(root / out.triplets),
        }
        lock[section_key("outputs", platform, proj_name)] = {
            "embeddings_sha256": _sha256(root / out.embeddings),
            "weights_sha256": _sha256(root / out.weights),
            "final_loss": final_loss,
            "test_mrr": metrics.get("projection"),
            "base_mrr": metrics.get("base"),
            "search": _chosen_search(root / out.index_table),
        }
    return lock


def _chosen_search(table: Path) -> str | None:
    """The search the index step chose on the history questions (``meta.search_choice``)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{table}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE name = 'search_choice'").fetchone()
        finally:
            db.close()
        return json.loads(row[0]).get("search") if row else None
    except (sqlite3.Error, ValueError, AttributeError):
        return None


def _check_built_from_this_recipe(recipe, root: Path) -> None:
    """Refuse a lock whose recipe hash would not match its outputs: each projection's pairs
    and weights record the keys they were made with (``settings_sha256``); a recipe edited
    while (or after) they were built has other keys, and the lock would pair the new recipe
    with the old outputs."""
    from oxidize.engine.fingerprint import digest
    from oxidize.engine.layout import Layout, build_dir

    for name, proj in sorted(recipe.projections.items()):
        out = Layout(recipe.name, name, build_dir(root))
        for record, settings, what in ((out.pairs_json, proj.pair_settings(), "pairs"),
                                       (out.training_json, proj.train_settings(), "weights")):
            try:
                made_with = json.loads((root / record).read_text(encoding="utf-8")).get("settings_sha256")
            except (OSError, ValueError, AttributeError):
                continue  # absent: the completeness check names it
            if made_with is not None and made_with != digest(settings):
                raise BuildError(f"{recipe.name}:{name}: its {what} were made with other keys than "
                                 f"{recipe.path} has now (it changed during or after the build); "
                                 f"run `doit` again and the lock follows")


def _blas_kernel(recipe, root: Path) -> str:
    """The OpenBLAS kernel the recipe's projections were trained on (``training.json``; the
    platform key alone does not say it: oxidize/train/blas.py), ``unknown`` if not recorded."""
    from oxidize.engine.layout import Layout, build_dir

    kernels = set()
    for proj_name in recipe.projections:
        try:
            training = json.loads((root / Layout(recipe.name, proj_name, build_dir(root)).training_json)
                                  .read_text(encoding="utf-8"))
            kernels.add(str(training.get("blas_kernel") or "unknown"))
        except (OSError, ValueError, AttributeError):
            kernels.add("unknown")
    return "+".join(sorted(kernels)) or "unknown"


# --------------------------------------------------------------------------- the task action


def build_lock(recipe_file: str, recipe_name: str, lock_file: str):
    """doit action of ``R:lock``: write the lock, or in locked mode compare with it.

    Returns doit's ``TaskFailed`` (message only, no traceback) when the build does not
    match the committed lock, or when an oxidize error occurs.
    """
    from doit.exceptions import TaskFailed

    from oxidize.util.atomic import write_text
    from oxidize.recipe import load_recipe

    try:
        recipe = load_recipe(Path(recipe_file), recipe_name)
        lock = compute_lock(recipe, Path.cwd())
        _check_complete(lock, recipe_name)
        _check_same_snapshot(lock, recipe, Path.cwd())
        built = flatten(lock)
        path = Path(lock_file)
        committed = read_lock(path) if path.is_file() else None
        if not locked():
            text = render_flat(merge(committed, built), recipe_name)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                write_text(path, text)
            print(f"{recipe_name}:lock: {lock_file} written", flush=True)
            return None
        if committed is None:
            raise BuildError(f"{lock_file}: no committed lock file, and {LOCKED_ENV} is set; run `doit` "
                             f"without {LOCKED_ENV} and commit {lock_file}")
        diffs, note = check(committed, built, strict=strict())
        if diffs:
            lines = "\n".join(f"  {field}: committed {old or '(absent)'} vs built {new or '(absent)'}"
                              for field, old, new in diffs)
            raise BuildError(f"{lock_file}: this build does not match the committed lock "
                             f"({len(diffs)} field{'s differ' if len(diffs) != 1 else ' differs'}):\n{lines}\n"
                             f"If the change is intended, run `doit` without {LOCKED_ENV} and commit "
                             f"the new {lock_file}.")
        print(f"{recipe_name}:lock: {note or f'build matches {lock_file}'}", flush=True)
        return None
    except OxidizeError as err:  # the reporter prints it, once
        return TaskFailed(f"oxidize: {err}")


def _platform_of(key: str) -> str | None:
    """The platform of an ``outputs."<platform>".<projection>.<field>`` key, else ``None``."""
    if not key.startswith('outputs."'):
        return None
    end = key.find('"', len('outputs."'))
    return key[len('outputs."'):end] if end > 0 else None


def merge(committed: dict[str, str] | None, built: dict[str, str]) -> dict[str, str]:
    """The lock to write: the built one, plus the committed lock's entries of other platforms
    when every input is unchanged (an input change resets them: they were built from
    something else)."""
    if committed is None:
        return built
    inputs = lambda flat: {k: v for k, v in flat.items() if _platform_of(k) is None}  # noqa: E731
    if inputs(committed) != inputs(built):
        return built
    mine = {_platform_of(k) for k in built} - {None}
    kept = {k: v for k, v in committed.items() if _platform_of(k) not in (None, *mine)}
    return {**kept, **built}


def check(committed: dict[str, str], built: dict[str, str], strict: bool = False):
    """Locked mode: ``(differences, note)``. Inputs must match exactly; outputs byte-exact
    where the lock has this platform; where it has not, each projection's test MRR@10 must be
    within :data:`METRIC_TOLERANCE` of every recorded platform's (``strict``: fail instead),
    and ``note`` says so in one line."""
    diffs = compare({k: v for k, v in committed.items() if _platform_of(k) is None},
                    {k: v for k, v in built.items() if _platform_of(k) is None})
    mine = next(iter({_platform_of(k) for k in built} - {None}), None)
    recorded = sorted({_platform_of(k) for k in committed} - {None})
    if mine in recorded:  # this platform's outputs too: a reviewer sees what moved
        return diffs + compare({k: v for k, v in committed.items() if _platform_of(k) == mine},
                               {k: v for k, v in built.items() if _platform_of(k) == mine}), None
    if diffs:
        return diffs, None
    if strict or not recorded:
        why = "OXIDIZE_LOCKED=strict" if strict else "the lock records no platform"
        return [("outputs", ", ".join(recorded) or "(none)", f"{mine} ({why})")], None
    prefix = f'outputs.{section_key(mine)}.'
    found, failures = [], []
    for key, value in sorted(built.items()):
        if not (key.startswith(prefix) and key.endswith(".test_mrr")):
            continue
        projection = key[len(prefix):-len(".test_mrr")]
        for platform in recorded:
            other = committed.get(f'outputs.{section_key(platform)}.{projection}.test_mrr')
            if other is None:
                failures.append((key, "(absent)", value))
            elif abs(float(value) - float(other)) > METRIC_TOLERANCE:
                failures.append((key, f"{other} on {platform}", f"{value} (tolerance {METRIC_TOLERANCE})"))
            else:
                found.append(f"{projection} {float(value):.3f} vs {float(other):.3f}")
    note = (f"platform {mine} is new to the lock: test mrr@10 within {METRIC_TOLERANCE} of "
            f"{', '.join(recorded)} ({'; '.join(found)}); outputs not compared byte for byte")
    return failures, None if failures else note


def _check_complete(lock: dict[str, dict[str, Any]], recipe_name: str) -> None:
    """A lock is written only from a complete build (its task depends on every output)."""
    missing = [f"{section}.{key}" for section, values in lock.items() for key, value in values.items()
               if value is None and key not in OPTIONAL]
    if missing:
        raise BuildError(f"{recipe_name}:lock: cannot lock an incomplete build; missing "
                         f"{', '.join(sorted(missing))}; run `doit {recipe_name}`")


def _check_same_snapshot(lock: dict[str, dict[str, Any]], recipe, root: Path) -> None:
    """The log read now must be the one the pairs were built from (patina may append meanwhile)."""
    from oxidize.engine.layout import Layout, build_dir

    now = (lock["eventlog"]["events"], lock["eventlog"]["max_seq"])
    for proj_name in sorted(recipe.projections):
        pairs_json = root / Layout(recipe.name, proj_name, build_dir(root)).pairs_json
        try:
            stats = json.loads(pairs_json.read_text(encoding="utf-8"))
            built = (int(stats["event_count"]), int(stats["max_seq"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a pair type that records no counts: nothing to compare
        if built != now:
            # Not stuck: without its pairs.json the pairs task rebuilds on the next `doit`.
            for other in sorted(recipe.projections):
                (root / Layout(recipe.name, other, build_dir(root)).pairs_json).unlink(missing_ok=True)
            raise BuildError(f"{recipe.name}:lock: the event log changed during the build: "
                             f"{pairs_json} was built from {built[0]} events (last seq {built[1]}), "
                             f"the log now has {now[0]} (last seq {now[1]}); run `doit` again")
