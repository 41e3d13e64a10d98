"""Recipes: an ``oxidize.yaml`` file read into frozen dataclasses, or a clear error.

A recipe is the user's only way to steer a build, so a mistake in it must be caught when
doit loads the tasks — before any embedding or training runs — and reported as one
:class:`~oxidize.errors.RecipeError` that names the file, the dotted key path
(``projections.semantic.epochs``) and what was expected. patina's format loads unchanged;
everything oxidize adds is optional and has a default.

Every key of every level is one row of a table (:data:`TOP_KEYS`, :data:`PROJECTION_KEYS`,
:data:`TRAINING_KEYS`): its validator, its default and the build stages that read it. The
stage column feeds :meth:`Projection.pair_settings` / :meth:`Projection.train_settings`,
the flat dicts doit's up-to-date checks compare, so a new key (``holdout``, ``gate``) is a
row in a table plus a field in the dataclass — a test checks the two agree. The machinery
the tables are written in (table rows, typed checks) is :mod:`oxidize.recipe.checks`.

This module is imported whenever doit lists tasks, so it uses only the standard library
and PyYAML: no numpy, numba or onnxruntime here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oxidize.errors import RecipeError
from oxidize.train.memory import batch_memory, physical_memory, training_memory
# Parsed YAML is cached by text: a no-op doit neither imports nor runs PyYAML (see there).
from oxidize.recipe.yaml_text import PARSED, _parse_yaml  # noqa: F401 - PARSED: tasks.py's cache
from oxidize.recipe.checks import (GitSource, Key, _bool, _choice, _eventlog_source, _float, _found,  # noqa: F401
                                   _int, _is_int, _optional, _path, _read_block, _short, _string,
                                   _suggest, _Where)

DEFAULT_MODEL = "all-minilm-l6-v2"
#: Session notes a ``same_session`` index holds by default: every type patina writes a note in.
DEFAULT_INDEX_EVENT_TYPES: tuple[str, ...] = (
    "session.goal", "session.work", "session.context", "session.decision", "session.pattern",
    "session.observation")
#: ... and the notes its projection trains on: the same, the population it will rank (better
#: on later sessions than decisions/observations/patterns alone: docs/benchmarks.md).
DEFAULT_EVENT_TYPES: tuple[str, ...] = DEFAULT_INDEX_EVENT_TYPES
DEFAULT_LAYERS: tuple[int | None, int, int] = (None, 1024, 256)
SUPPORTED_VERSION = 1
PAIR_TYPES = ("same_session", "co_changed", "commit_files", "same_commit", "caller_callee")
# patina's projection names imply the kind of pairs they learn from.
PAIR_TYPE_BY_PROJECTION = {"semantic": "same_session", "temporal": "commit_files",
                           "dependency": "caller_callee"}
OPTIMIZERS = ("adam", "sgd")
# How the projection's linear path starts (oxidize.train.start.linear_init); the first is the
# default: "auto" keeps the candidate start that scores best on the validation part.
INITS = ("auto", "within", "pca", "identity", "none")
# The training loss (oxidize/losses/); the first is the default.
LOSSES = ("triplet", "in_batch")
# Where a triplet's negative comes from (oxidize/train/negatives.py); the first is the default.
NEGATIVES = ("random", "hard")
# What a projection's held-out MRR@10 must reach for the build to pass (null: no gate).
GATES = ("base", "random")
MAX_DIMENSION = 65536
# Stand-in for the input size when ``layers[0]`` is null; the model's real dimension is
# checked later, once the model is resolved.
ESTIMATE_INPUT_DIM = 1024
# Seeds go to Numba's ``np.random.seed``, which takes an unsigned 32-bit integer.
MAX_SEED = 2**32 - 1
MAX_NAME_LENGTH = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class TrainingConfig:
    """How one projection's pairs are drawn and its network trained (the ``training:`` block)."""

    pair_type: str
    pairs: int | None
    event_types: tuple[str, ...]
    min_chars: int
    learning_rate: float
    margin: float
    seed: int
    optimizer: str
    momentum: float
    weight_decay: float
    # Defaults here too, so code that builds a config by position keeps working.
    holdout: float = 0.2
    min_count: int = 2
    init: str = "auto"
    patience: int | None = 3
    start_penalty: float = 0.0
    loss: str = "in_batch"
    temperature: float = 0.1
    negatives: str = "random"


@dataclass(frozen=True)
class IndexConfig:
    """What a projection's search index holds (the ``index:`` block; oxidize/search/index.py)."""

    event_types: tuple[str, ...]


@dataclass(frozen=True)
class EvalConfig:
    """What the eval step scores besides the held-out split (the ``eval:`` block): query sets
    in patina's bench format (oxidize/search/queryset.py), paths as written, relative to the recipe."""

    queries: tuple[str, ...] = ()


@dataclass(frozen=True)
class Projection:
    """One projection: an MLP ``layers[0] → layers[1] (ReLU) → layers[2]``.

    ``layers[0] is None`` means "take the model's dimension"; the model is resolved later.
    """

    name: str
    layers: tuple[int | None, int, int]
    epochs: int
    batch_size: int
    training: TrainingConfig
    gate: str | None = None
    index: IndexConfig = IndexConfig(DEFAULT_INDEX_EVENT_TYPES)
    eval: EvalConfig = EvalConfig()

    def pair_settings(self) -> dict[str, object]:
        """The recipe keys the pairs stage reads, flat and JSON-ready (see :func:`_settings`)."""
        return _settings(self, "pairs")

    def train_settings(self) -> dict[str, object]:
        """The recipe keys the training stage reads, flat and JSON-ready."""
        return _settings(self, "train")

    def eval_settings(self) -> dict[str, object]:
        """The recipe keys the eval stage reads (the quality ``gate``), flat and JSON-ready."""
        return _settings(self, "eval")

    def index_settings(self) -> dict[str, object]:
        """The recipe keys the index stage reads (its population), flat and JSON-ready."""
        return _settings(self, "index")


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``path`` is the recipe file; ``model_dir``/``eventlog`` are absolute."""

    name: str
    path: Path
    version: int
    embedding_model: str
    embedding_int8: bool
    model_dir: Path | None
    eventlog: Path | GitSource | None
    projections: dict[str, Projection]

    def resolve_model(self):
        """The embedding model's files and settings (:func:`oxidize.embed.models.resolve_model`)."""
        from oxidize.embed import models

        return models.resolve_model(self.embedding_model, self.model_dir,
                                    int8_matmul=self.embedding_int8)

    def projection(self, name: str) -> Projection:
        """The projection called ``name``; a RecipeError with a close match if there is none."""
        try:
            return self.projections[name]
        except KeyError:
            hint = _suggest(name, self.projections, "projections")
            raise RecipeError(self.path, f"projections.{name}", f"no such projection; {hint}") from None

    def pair_settings(self, projection_name: str) -> dict[str, object]:
        """Flat ``{dotted key: value}`` of what the pairs of ``projection_name`` depend on."""
        return self.projection(projection_name).pair_settings()

    def train_settings(self, projection_name: str) -> dict[str, object]:
        """Flat ``{dotted key: value}`` of what the weights of ``projection_name`` depend on."""
        return self.projection(projection_name).train_settings()

    def model_settings(self) -> dict[str, object]:
        """The recipe keys the model fingerprint depends on.

        ``model_dir`` is left out on purpose: it is an absolute path (moving the project
        must not make everything stale), and the fingerprint hashes the files it holds.
        """
        return {key: _plain(getattr(self, key)) for key, spec in TOP_KEYS.items() if "model" in spec.stages}


def _settings(projection: Projection, stage: str) -> dict[str, object]:
    """Values after defaults, keyed ``projections.P.key`` / ``projections.P.training.key``.

    Because defaults are already applied, writing a default out explicitly changes nothing,
    and because the dict is per stage, editing ``epochs`` leaves the pairs up to date.
    """
    prefix = f"projections.{projection.name}"
    out: dict[str, object] = {}
    for key, spec in PROJECTION_KEYS.items():
        if stage in spec.stages:
            out[f"{prefix}.{key}"] = _plain(getattr(projection, key))
    for key, spec in TRAINING_KEYS.items():
        if stage in spec.stages:
            out[f"{prefix}.training.{key}"] = _plain(getattr(projection.training, key))
    for block, keys in (("index", INDEX_KEYS), ("eval", EVAL_KEYS)):
        for key, spec in keys.items():
            if stage in spec.stages:
                out[f"{prefix}.{block}.{key}"] = _plain(getattr(getattr(projection, block), key))
    return out


def _plain(value: object) -> object:
    """Tuples become lists so the settings compare equal to their JSON round trip."""
    return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------- loading


def load_recipe(path: Path, name: str) -> Recipe:
    """Read the recipe file at ``path`` (with ``yaml.safe_load``) and validate it as ``name``.

    Raises:
        RecipeError: the file is unreadable, is not YAML, or is not a valid recipe.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(path, None, "recipe file not found") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(path, None, f"not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise RecipeError(path, None, f"cannot read the recipe file: {exc.strerror or exc}") from None
    return parse_recipe(_parse_yaml(text, path), path, name)


def parse_recipe(data: object, path: Path, name: str) -> Recipe:
    """Validate already-parsed YAML ``data`` as the recipe ``name`` read from ``path``.

    Relative ``eventlog``/``model_dir`` values are resolved against ``path``'s directory.

    Raises:
        RecipeError: for the first problem found, naming the dotted key path.
    """
    path = Path(path)
    problem = _name_problem(name)
    if problem:
        raise RecipeError(path, None, f"recipe name {_short(name)} {problem}")
    if data is None:
        raise RecipeError(path, None, "the recipe is empty; expected a mapping with "
                                      "'version: 1' and 'projections'")
    values = _read_block(data, TOP_KEYS, _Where(path, None))
    return Recipe(name=name, path=path, **values)


# --------------------------------------------------------------------------- recipe checks
# (the generic ones, and Key/_Where/_read_block, are in oxidize.recipe.checks)


def _name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a directory under ``build/`` (``None`` if it can)."""
    if not isinstance(name, str):
        return f"is {_found(name)}; expected a string"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; expected at most {MAX_NAME_LENGTH}"
    if not _NAME_RE.fullmatch(name) or name.endswith("."):
        return ("is not a safe file name; expected letters, digits, '_', '.' or '-', "
                "starting with a letter or digit and not ending with '.'")
    return None


def _version(value: Any, where: _Where) -> int:
    _int()(value, where)
    if value != SUPPORTED_VERSION:
        raise where.fail(f"unsupported version {value}; oxidize reads version {SUPPORTED_VERSION}")
    return value


def _event_types(value: Any, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise where.fail(f"expected a non-empty list of event types, found {_found(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise where.fail(f"item {index}: expected an event type (a non-empty string), "
                             f"found {_found(item)}")
    return tuple(value)


def _check_memory(projection: Projection, where: _Where) -> None:
    """Refuse, before allocating anything, a projection whose training would not fit."""
    in_dim, hidden, out_dim = projection.layers
    in_dim = ESTIMATE_INPUT_DIM if in_dim is None else in_dim
    have = physical_memory()
    weights = training_memory(in_dim, hidden, out_dim)
    buffers = batch_memory(in_dim, hidden, out_dim, projection.batch_size,
                           in_batch=projection.training.loss == "in_batch")
    if have is not None and weights + buffers > have:
        raise RecipeError(where.path, f"{where.key}.batch_size",
                          f"batch_size {projection.batch_size} with layers {list(projection.layers)} "
                          f"would need about {(weights + buffers) / 2**30:.1f} GiB to train "
                          f"({buffers / 2**30:.1f} GiB of minibatch buffers, {weights / 2**30:.1f} GiB "
                          f"of weights, gradients and Adam moments), but this process may use "
                          f"{have / 2**30:.1f} GiB; lower batch_size")


def _layers(value: Any, where: _Where) -> tuple[int | None, int, int]:
    expected = "a list of 3 dimensions [input, hidden, output] (input may be null)"
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise where.fail(f"expected {expected}, found {_found(value)}"
                         + (f" of length {len(value)}" if isinstance(value, (list, tuple)) else ""))
    for index, dim in enumerate(value):
        if dim is None and index == 0:
            continue
        if not _is_int(dim) or not 1 <= dim <= MAX_DIMENSION:
            raise where.fail(f"layers[{index}]: expected an integer from 1 to {MAX_DIMENSION}, "
                             f"found {_found(dim)}")
    in_dim, hidden, out_dim = value
    need = training_memory(ESTIMATE_INPUT_DIM if in_dim is None else in_dim, hidden, out_dim)
    have = physical_memory()
    if have is not None and need > have:
        shown = "[" + ", ".join("null" if d is None else str(d) for d in value) + "]"
        raise where.fail(f"layers {shown} would need about {need / 2**30:.1f} GiB of memory "
                         f"to train (weights, gradients and two Adam moments, float32), "
                         f"but this machine has {have / 2**30:.1f} GiB")
    return (in_dim, hidden, out_dim)


def _training(value: Any, where: _Where) -> TrainingConfig:
    values = _read_block({} if value is None else value, TRAINING_KEYS, where,
                         (PROJECTION_KEYS, "it belongs to the projection, one level up"))
    return TrainingConfig(**values)


def _projections(value: Any, where: _Where) -> dict[str, Projection]:
    if value is None or value == {}:
        raise where.fail(_NO_PROJECTIONS)
    if not isinstance(value, dict):
        raise where.fail(f"expected a mapping of projection names to settings, found {_found(value)}")
    projections: dict[str, Projection] = {}
    for name, block in value.items():
        sub = _Where(where.path, f"{where.key}.{name}", projection=str(name))
        problem = _name_problem(name)
        if problem:
            raise sub.fail(f"projection name {_short(name)} {problem}")
        values = _read_block({} if block is None else block, PROJECTION_KEYS, sub,
                             (TRAINING_KEYS, "training settings go under 'training:'"))
        projections[name] = Projection(name=name, **values)
        _check_memory(projections[name], sub)
    return projections


def _default_pair_type(where: _Where) -> str:
    return PAIR_TYPE_BY_PROJECTION.get(where.projection, "same_session")


def _holdout(value: Any, where: _Where) -> float:
    """A fraction from 0 to 0.9 (oxidize.pairs.split.MAX_HOLDOUT: a tenth always trains)."""
    number = _float(0)(value, where)
    if number > 0.9:
        raise where.fail(f"expected a fraction from 0 to 0.9 (the share of the latest groups kept "
                         f"for evaluation), found {_found(value)}")
    return number


_NO_PROJECTIONS = ("no projections; expected a mapping of projection names to settings, "
                   "e.g. 'semantic: {layers: [384, 1024, 256]}'")

# One row per key. A null ``projections.P`` or ``training`` block means "all defaults".
TOP_KEYS: dict[str, Key] = {
    "version": Key(_version, missing=f"missing required key; expected 'version: {SUPPORTED_VERSION}'"),
    "embedding_model": Key(_string, DEFAULT_MODEL, stages=("model",)),
    # int8 kernels for a model's int8-stored weights, one text per run (oxidize/embed/int8.py)
    "embedding_int8": Key(_bool, True, stages=("model",)),
    "model_dir": Key(_optional(_path), None),
    "eventlog": Key(_optional(_eventlog_source), None),
    "projections": Key(_projections, missing=_NO_PROJECTIONS),
}
PROJECTION_KEYS: dict[str, Key] = {
    "layers": Key(_layers, DEFAULT_LAYERS, stages=("train",)),
    "epochs": Key(_int(minimum=1), 10, stages=("train",)),
    "batch_size": Key(_int(minimum=1), 32, stages=("train",)),
    "training": Key(_training, lambda where: _training({}, where)),
    "gate": Key(_optional(_choice(*GATES)), None, stages=("eval",)),
    "index": Key(lambda v, w: _index(v, w), lambda where: _index({}, where)),
    "eval": Key(lambda v, w: _eval(v, w), lambda where: _eval({}, where)),
}
TRAINING_KEYS: dict[str, Key] = {
    "pair_type": Key(_choice(*PAIR_TYPES), _default_pair_type, stages=("pairs", "index")),
    "pairs": Key(_optional(_int(minimum=1)), None, stages=("pairs",)),
    "event_types": Key(_event_types, DEFAULT_EVENT_TYPES, stages=("pairs",)),
    "min_chars": Key(_int(minimum=0), 20, stages=("pairs", "index")),
    "learning_rate": Key(_float(0, above=True), 0.001, stages=("train",)),
    "margin": Key(_float(0), 0.2, stages=("train",)),
    "seed": Key(_int(minimum=0, maximum=MAX_SEED), 42, stages=("pairs", "train")),
    "optimizer": Key(_choice(*OPTIMIZERS), "adam", stages=("train",)),
    "momentum": Key(_float(0, below=1), 0.9, stages=("train",)),
    "weight_decay": Key(_float(0), 0.0, stages=("train",)),
    # Held-out split by time and the relation threshold of co_changed/same_commit
    # (oxidize/pairs/split.py, co_changed.py, same_commit.py say why these defaults).
    "holdout": Key(_holdout, 0.2, stages=("pairs",)),
    "min_count": Key(_int(minimum=1), 2, stages=("pairs",)),
    # The start, early stopping, the loss: in_batch at 0.1 was best on later data (docs/benchmarks.md).
    "init": Key(_choice(*INITS), INITS[0], stages=("train",)),
    "patience": Key(_optional(_int(minimum=1)), 3, stages=("train",)),
    "start_penalty": Key(_float(0), 0.0, stages=("train",)),
    "loss": Key(_choice(*LOSSES), "in_batch", stages=("train",)),
    "temperature": Key(_float(0, above=True), 0.1, stages=("train",)),
    "negatives": Key(_choice(*NEGATIVES), NEGATIVES[0], stages=("train",)),
}
INDEX_KEYS: dict[str, Key] = {
    "event_types": Key(_event_types, DEFAULT_INDEX_EVENT_TYPES, stages=("index",)),
}


def _query_sets(value: Any, where: _Where) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise where.fail(f"expected a list of query set files (paths relative to the recipe), "
                         f"found {_found(value)}")
    return tuple(value)


EVAL_KEYS: dict[str, Key] = {
    "queries": Key(_query_sets, (), stages=("eval",)),
}


def _eval(value: Any, where: _Where) -> EvalConfig:
    return EvalConfig(**_read_block({} if value is None else value, EVAL_KEYS, where,
                                    (TRAINING_KEYS, "training settings go under 'training:'")))


def _index(value: Any, where: _Where) -> IndexConfig:
    return IndexConfig(**_read_block({} if value is None else value, INDEX_KEYS, where,
                                     (TRAINING_KEYS, "training settings go under 'training:'")))
