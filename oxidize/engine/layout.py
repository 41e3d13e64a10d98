"""Where everything of a build lives: the build folder, the shared caches, one projection's
files, and the event log a recipe reads. Paths are relative to the project root.

Its own module because the task graph, the lock file, ``doit stale`` and the query command
all need the same answers, and none of them should import another to get them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oxidize.recipe import Recipe

#: Where build outputs go, relative to the project root.
BUILD_DIR = "build"
#: Where a patina checkout keeps oxidize's build folder: under patina's git-ignored
#: ``.patina/local/`` instead of a new untracked ``build/`` at the root.
PATINA_BUILD_DIR = ".patina/local/oxidize"
#: The last failure message of each task (written by oxidize.engine.reporter).
FAILURES_FILE = "build/.failures.json"
#: The embedding cache shared by every recipe of the project.
CACHE_FILE = "build/.cache/embeddings.sqlite"
#: Parsed recipe YAML kept between runs (content-addressed; safe to delete).
RECIPE_CACHE = "build/.cache/recipes.json"
RECIPE_CACHE_ENTRIES = 64
#: Files written directly in ``build/<recipe>/``, beside the projection folders: names no
#: projection may take.
RECIPE_FILES = frozenset({"model.json", "eventlog.sqlite", "file_texts.sqlite"})
#: Where patina keeps its event log, relative to the project root, in order of preference.
PATINA_EVENTLOGS = (".patina/data/patina.db", ".patina/local/data/patina.db")


def build_dir(root: Path | str = ".") -> str:
    """The project's build folder, relative to its root: ``build``, or in a patina checkout
    (a ``.patina/`` folder at the root) :data:`PATINA_BUILD_DIR`."""
    return PATINA_BUILD_DIR if (Path(root) / ".patina").is_dir() else BUILD_DIR


def in_build(path: str, root: Path | str = ".") -> str:
    """One of the ``build/…`` paths above (:data:`CACHE_FILE`…) in the project's build folder."""
    return build_dir(root) + path[len(BUILD_DIR):]


@dataclass(frozen=True)
class Layout:
    """Paths of one projection's outputs, all relative to the project root (``base`` is the
    project's :func:`build_dir`)."""

    recipe: str
    projection: str
    base: str = BUILD_DIR

    @property
    def dir(self) -> Path:
        return Path(self.base) / self.recipe / self.projection

    @property
    def model_json(self) -> Path:
        return Path(self.base) / self.recipe / "model.json"

    @property
    def scraped_eventlog(self) -> Path:
        """The event log scraped from a git repository (``eventlog: {git: …}``)."""
        return Path(self.base) / self.recipe / "eventlog.sqlite"

    @property
    def described_files(self) -> Path:
        """Texts of the files at HEAD of the repository a patina checkout's log lives in."""
        return Path(self.base) / self.recipe / "file_texts.sqlite"

    texts = property(lambda self: self.dir / "texts.jsonl")
    triplets = property(lambda self: self.dir / "triplets.npy")
    pairs_json = property(lambda self: self.dir / "pairs.json")
    heldout = property(lambda self: self.dir / "heldout.npy")
    validation = property(lambda self: self.dir / "validation.npy")
    groups = property(lambda self: self.dir / "groups.npy")
    related = property(lambda self: self.dir / "related.npy")
    history = property(lambda self: self.dir / "history_queries.json")
    embeddings = property(lambda self: self.dir / "embeddings.npy")
    embed_json = property(lambda self: self.dir / "embed.json")
    weights = property(lambda self: self.dir / "weights.safetensors")
    training_json = property(lambda self: self.dir / "training.json")
    metrics = property(lambda self: self.dir / "metrics.json")
    training_png = property(lambda self: self.dir / "training.png")
    onnx = property(lambda self: self.dir / "projection.onnx")
    index = property(lambda self: self.dir / "index.usearch")
    base_vectors = property(lambda self: self.dir / "base.npy")
    projected_vectors = property(lambda self: self.dir / "projected.npy")
    vector_keys = property(lambda self: self.dir / "keys.npy")
    index_table = property(lambda self: self.dir / "index.sqlite")
    export_json = property(lambda self: self.dir / "export.json")


#: The projection names patina's ``scry`` searches, each under a key scheme of its own
#: (oxidize/patina/population.py); a patina recipe's projections of these names are exported.
PATINA_NAMES = ("semantic", "temporal", "dependency")


def patina_projections_dir(model: str) -> str:
    """Where patina's scry loads projections and indexes of ``model``, relative to the root."""
    return f".patina/local/data/embeddings/{model}/projections"


def check_folders(root: Path | str = ".") -> None:
    """Raise a BuildError when a folder oxidize writes in (the build folder, its caches,
    ``.patina/local`` and patina's projections folders) exists as something else — a file
    named ``build``, say — rather than failing later with a traceback."""
    from oxidize.errors import BuildError

    root = Path(root)
    base = build_dir(root)
    folders = [base, f"{base}/.cache", f"{base}/.cache/onnx"]
    if (root / ".patina").is_dir():
        folders += [".patina/local", ".patina/local/data", ".patina/local/data/embeddings"]
        embeddings = root / ".patina/local/data/embeddings"
        if embeddings.is_dir():
            folders += [str(p.relative_to(root) / "projections") for p in embeddings.iterdir() if p.is_dir()]
    for folder in folders:
        path = root / folder
        if os.path.lexists(path) and not path.is_dir():
            raise BuildError(f"{folder} is a file, not a folder; oxidize writes its build outputs, "
                             f"caches and state there: move it away or delete it, then run again")


def files_repository(recipe: Recipe) -> Path | None:
    """The git repository whose files a recipe's file population is described from, when
    its event log is not scraped (``{git: …}`` describes its own): a patina checkout's root
    (``.patina/oxidize.yaml``), where patina's log names the files of that very repository,
    for a recipe with a ``co_changed`` projection. ``None`` elsewhere — a log anywhere else
    may name files of a repository oxidize cannot know, and keeps path texts."""
    from oxidize.recipe.checks import GitSource

    if isinstance(recipe.eventlog, GitSource) or recipe.path.parent.name != ".patina":
        return None
    if not any(p.training.pair_type in ("co_changed", "commit_files") for p in recipe.projections.values()):
        return None
    return recipe.path.parent.parent


def eventlog_path(recipe: Recipe, root: Path) -> Path:
    """The event log a recipe reads: its ``eventlog:`` key, else patina's own database.

    Returns the path even when the file does not exist (the pairs task then fails with a
    clear message), so listing tasks works before the log is there.
    """
    from oxidize.recipe.checks import GitSource

    if isinstance(recipe.eventlog, GitSource):
        return root / Layout(recipe.name, "", build_dir(root)).scraped_eventlog
    if recipe.eventlog is not None:
        return recipe.eventlog
    for candidate in PATINA_EVENTLOGS:
        if (root / candidate).is_file():
            return root / candidate
    return root / PATINA_EVENTLOGS[0]


def _rel(path: Path, root: Path) -> str:
    """A path as doit should see it: relative to the root when inside it (never hash an
    absolute path into a project-local state), absolute otherwise."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(root)))
    except ValueError:
        return str(Path(os.path.abspath(path)))
