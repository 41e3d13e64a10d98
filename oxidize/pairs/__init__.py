"""Training pairs: the texts table and the (anchor, positive, negative) triplets.

Why a package: each pair type is its own concept with its own sampling rule, so each lives
in its own module (``same_session.py``, ``co_changed.py``, ``same_commit.py``,
``caller_callee.py``; the held-out split in ``split.py``) and this module only
holds what they share — the :class:`PairSet` they return, the :data:`PAIR_TYPES` registry,
and the file format of the ``pairs`` stage.

The output is split in two on purpose (see docs/architecture.md): ``texts.jsonl`` is the
table of unique texts, in a deterministic order, and is all the embed stage depends on;
``triplets.npy`` holds indices into it. Changing only the number of pairs or the seed
rewrites the triplets but leaves ``texts.jsonl`` byte-identical, so doit's MD5 check keeps
the (expensive) embeddings.

numpy is imported inside the functions only: doit's task loader imports this package when
it merely lists tasks, and that must stay light.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxidize.util.atomic import atomic_path, write_bytes, write_json
from oxidize.errors import OxidizeError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from oxidize.eventlog import EventLog

#: File names the pairs stage writes into its output directory.
TEXTS_FILE = "texts.jsonl"
TRIPLETS_FILE = "triplets.npy"
STATS_FILE = "pairs.json"
HELDOUT_FILE = "heldout.npy"
VALIDATION_FILE = "validation.npy"
GROUPS_FILE = "groups.npy"
RELATED_FILE = "related.npy"
HISTORY_FILE = "history_queries.json"


@dataclass
class PairSet:
    """What a pair generator returns.

    Attributes:
        texts: the unique texts, in a deterministic order (first appearance by ``seq``).
        triplets: ``int32[n, 3]`` rows of (anchor, positive, negative) indices into ``texts``.
        stats: a flat JSON-able dict (``pair_type``, counts, the log's ``max_seq`` …) that
            is written to ``pairs.json`` and explains what was built.
        heldout: ``int32[m, 2]`` rows of (query, relevant) indices into ``texts``, between
            held-out texts only (see :mod:`oxidize.pairs.split`); ``None`` = none. The
            **test** part: the latest held-out groups, reported by the eval step only.
        validation: the same for the older held-out groups, on which training chooses its
            start map and epoch.
        groups: ``int32[len(texts)]``, each text's group (its session) or -1; and
        related: ``int32[k, 2]`` undirected edges — together, the texts that must never be
            each other's negative (``training.negatives: hard`` mines among the rest).
        history: the questions the part of the log after the held-out cut asks
            (:class:`oxidize.pairs.history.History`), ``None`` = the pair type asks none.
    """

    texts: list[str]
    triplets: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    heldout: np.ndarray | None = None
    validation: np.ndarray | None = None
    groups: np.ndarray | None = None
    related: np.ndarray | None = None
    history: Any = None


Generator = Callable[..., PairSet]


def _from_module(module: str, function: str = "generate") -> Generator:
    """A generator that imports its module only when called (keeps task loading light)."""

    def generate(log: EventLog, training: Any, label: str = "") -> PairSet:
        return getattr(importlib.import_module(module), function)(log, training, label)

    generate.__qualname__ = generate.__name__ = f"{module}.{function}"
    return generate


def _not_implemented(name: str) -> Generator:
    """A placeholder for a pair type that is planned but not written yet."""

    def generate(log: EventLog, training: Any, label: str = "") -> PairSet:
        implemented = ", ".join(sorted(n for n in PAIR_TYPES if n not in NOT_IMPLEMENTED))
        raise OxidizeError(f"pair_type `{name}` is not implemented yet in oxidize; "
                           f"use one of: {implemented}")

    generate.__qualname__ = generate.__name__ = f"not_implemented[{name}]"
    return generate


#: Pair types known but not implemented yet (each will get its own module).
NOT_IMPLEMENTED: frozenset[str] = frozenset()

#: pair_type name → generator ``(log, training, label) -> PairSet``.
PAIR_TYPES: dict[str, Generator] = {
    "same_session": _from_module("oxidize.pairs.same_session"),
    "co_changed": _from_module("oxidize.pairs.co_changed"),
    "commit_files": _from_module("oxidize.pairs.commit_files"),
    "same_commit": _from_module("oxidize.pairs.same_commit"),
    "caller_callee": _from_module("oxidize.pairs.caller_callee"),
    **{name: _not_implemented(name) for name in sorted(NOT_IMPLEMENTED)},
}


#: pair_type → the start map ``init: auto`` keeps unless validation clearly prefers another
#: (:func:`oxidize.train.start.choose_start`). Built on patina-dev.db at past moments and
#: scored on what came after (``benchmarks/bench_later.py``, docs/benchmarks.md), within-group
#: whitening held 1.03× the base on later sessions and 1.14× on later files but 0.98× on
#: later commit messages, where principal components held 1.00–1.02×: commits that share
#: files are not paraphrases of each other, so their "within" directions are mostly noise.
REFERENCE_STARTS: dict[str, str] = {"same_session": "within", "co_changed": "within", "commit_files": "within",
                                    "same_commit": "pca", "caller_callee": "within"}


def generate_pairs(log: EventLog, training: Any, label: str = "") -> PairSet:
    """Build the pair set of one projection from one event-log snapshot.

    Args:
        log: an open event log (its snapshot is read once).
        training: the projection's ``TrainingConfig`` (``pair_type``, ``pairs``,
            ``event_types``, ``min_chars``, ``seed`` are read here).
        label: prefix for the one line printed to stdout (``"example:semantic"``).

    Raises:
        OxidizeError: unknown or not-yet-implemented pair type; an
            :class:`~oxidize.errors.EventLogError` when the log has too little to pair.
    """
    generator = PAIR_TYPES.get(training.pair_type)
    if generator is None:
        raise OxidizeError(f"unknown pair_type `{training.pair_type}`; known: {', '.join(sorted(PAIR_TYPES))}")
    pairset = generator(log, training, label)
    if pairset.history is None:
        from oxidize.pairs.history import History

        pairset.history = History("none", note=f"{training.pair_type} asks no history questions")
    pairset.stats["history_questions"] = len(pairset.history.query_set("")["queries"])
    print(f"{label + ': ' if label else ''}{pairset.history.line()}", flush=True)
    return pairset


def default_pair_count(n_texts: int) -> int:
    """The automatic number of triplets: 10 per usable text, clamped to [1,000, 200,000].

    Ten per text lets every text be an anchor several times; the floor keeps tiny logs
    trainable for a few epochs, the ceiling keeps a huge log's pairs stage and training
    bounded (set ``training.pairs`` to go beyond).
    """
    return min(max(10 * n_texts, 1_000), 200_000)


def _texts_jsonl(texts: list[str]) -> bytes:
    """One JSON string per line, UTF-8, ``ensure_ascii=False`` (readable and diffable).

    A text holding a lone surrogate cannot be encoded as UTF-8; that line alone falls back
    to ``\\u`` escapes, which still round-trips exactly.
    """
    lines = []
    for text in texts:
        line = json.dumps(text, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(text, ensure_ascii=True)
        lines.append(line + "\n")
    return "".join(lines).encode("utf-8")


def write_pairs(pairset: PairSet, out_dir: Path | str) -> None:
    """Write ``texts.jsonl``, ``triplets.npy``, ``heldout.npy``, ``validation.npy``,
    ``groups.npy``, ``related.npy``, ``history_queries.json`` and ``pairs.json`` into
    ``out_dir``, atomically.

    Each file is renamed into place only when complete; ``pairs.json`` goes last so that
    its presence means the others are done. ``heldout.npy`` is always written (``[0, 2]``
    when nothing is held out), so it can be a doit target.
    """
    import numpy as np

    out = Path(out_dir)
    triplets = np.ascontiguousarray(pairset.triplets, dtype="<i4")
    if triplets.ndim != 2 or triplets.shape[1] != 3:
        raise OxidizeError(f"triplets for {out} have shape {triplets.shape}, expected (n, 3)")
    parts = {}
    for name, pairs in ((HELDOUT_FILE, pairset.heldout), (VALIDATION_FILE, pairset.validation),
                        (RELATED_FILE, pairset.related)):
        array = np.ascontiguousarray(() if pairs is None else pairs, dtype="<i4")
        if array.size == 0:
            array = array.reshape(0, 2)
        if array.ndim != 2 or array.shape[1] != 2:
            raise OxidizeError(f"held-out pairs for {out} have shape {array.shape}, expected (m, 2)")
        parts[name] = array
    write_bytes(out / TEXTS_FILE, _texts_jsonl(pairset.texts))
    with atomic_path(out / TRIPLETS_FILE, suffix=".npy") as tmp:
        np.save(tmp, triplets, allow_pickle=False)
    groups = (np.full(len(pairset.texts), -1) if pairset.groups is None else pairset.groups)
    parts[GROUPS_FILE] = np.ascontiguousarray(groups, dtype="<i4")
    for name, array in parts.items():
        with atomic_path(out / name, suffix=".npy") as tmp:
            np.save(tmp, array, allow_pickle=False)
    history = pairset.history.query_set(f"{out.parent.name}:{out.name} history") if pairset.history \
        else {"name": "history", "queries": []}
    write_json(out / HISTORY_FILE, history)
    write_json(out / STATS_FILE, pairset.stats)


def read_texts(path: Path | str) -> list[str]:
    """Read a ``texts.jsonl`` written by :func:`write_pairs`.

    Raises:
        OxidizeError: a line is not a JSON string (names the file and line).
    """
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise OxidizeError(f"cannot read texts table {path}: {err}") from None
    texts = []
    # split("\n"), not splitlines(): U+2028, U+0085 … may appear unescaped inside a text.
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        try:
            text = json.loads(line)
        except json.JSONDecodeError as err:
            raise OxidizeError(f"{path}: line {lineno}: not valid JSON ({err}); expected a JSON string") from None
        if not isinstance(text, str):
            raise OxidizeError(f"{path}: line {lineno}: found a JSON {type(text).__name__}, expected a string")
        texts.append(text)
    return texts


def read_triplets(path: Path | str) -> np.ndarray:
    """Read a ``triplets.npy`` written by :func:`write_pairs` (no pickle).

    Raises:
        OxidizeError: not a ``.npy`` file of integer ``(n, 3)`` rows.
    """
    return _read_index_rows(path, 3, "triplets", "n")


def read_heldout(path: Path | str) -> np.ndarray:
    """Read a ``heldout.npy`` written by :func:`write_pairs`: ``int32[m, 2]`` rows of
    (query, relevant) indices into ``texts.jsonl`` (no pickle).

    The evaluation corpus is every text index that appears in it; see
    :mod:`oxidize.pairs.split`.

    Raises:
        OxidizeError: not a ``.npy`` file of integer ``(m, 2)`` rows.
    """
    return _read_index_rows(path, 2, "held-out pairs", "m")


def _read_index_rows(path: Path | str, width: int, what: str, rows: str) -> np.ndarray:
    """An ``int32[rows, width]`` array of text indices from a ``.npy`` file, or a clear error."""
    import numpy as np

    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise OxidizeError(f"cannot read {what} {path}: {err}") from None
    if array.ndim != 2 or array.shape[1] != width or array.dtype.kind not in "iu":
        raise OxidizeError(f"{path}: {what} have shape {array.shape} and dtype {array.dtype}, "
                           f"expected int32 ({rows}, {width})")
    return array.astype(np.int32, copy=False)


def read_groups(path: Path | str) -> np.ndarray:
    """Read a ``groups.npy`` written by :func:`write_pairs`: ``int32[n_texts]`` (no pickle)."""
    import numpy as np

    try:
        groups = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise OxidizeError(f"{path}: not a readable groups file ({exc}); rebuild the pairs") from None
    if groups.ndim != 1 or groups.dtype.kind not in "iu":
        raise OxidizeError(f"{path}: expected an integer array [n_texts], found {groups.dtype} "
                           f"{groups.shape}; rebuild the pairs")
    return groups
