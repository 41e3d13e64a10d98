"""The doit actions: glue from files on disk to the modules that do the work.

Each function here is one task's action. It takes only strings (paths and names) so that
doit can pass it to another process under ``-n``; it re-reads the recipe (cheap) rather than
holding objects from load time. Numerical libraries are imported inside the functions: this
module is imported when doit loads the task graph, which must stay light.

A user's mistake surfaces as an :class:`~oxidize.errors.OxidizeError`; :func:`_user_errors`
turns it into doit's ``TaskFailed`` with the message alone, so the user sees one readable
line instead of a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

from oxidize import __version__
from oxidize.engine.fingerprint import digest
from oxidize.errors import OxidizeError, TrainingError


def _user_errors(func):
    """Report an OxidizeError as a failed task with its message and no traceback.

    doit prints a failed task's message itself (``TaskFailed - taskid:R:P.pairs`` and the
    message, also under ``-n 2``), so it is not printed here a second time. oxidize's own
    warnings (a dropped cache entry) become one ``oxidize: warning:`` line on stderr instead
    of Python's ``file:line: CacheWarning`` form that quotes source code.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import warnings

        caught: list = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("default")
                return func(*args, **kwargs)
        except OxidizeError as err:
            from doit.exceptions import TaskFailed

            return TaskFailed(f"oxidize: {err}")
        except Exception as exc:  # a write with no room left that no atomic_path named
            from doit.exceptions import TaskFailed

            from oxidize.util.atomic import out_of_room

            cause = out_of_room(exc)
            if cause is None:
                raise
            where = getattr(exc, "filename", None)
            return TaskFailed(f"oxidize: {'cannot write ' + str(where) if where else 'a write failed'}: "
                              f"{cause}; make room and run `doit` again")
        finally:
            _show_warnings(caught)  # outside catch_warnings, so others are shown as usual

    return wrapper


def _show_warnings(caught) -> None:
    """Print oxidize's warnings as one plain line each; pass any other warning on as usual."""
    import warnings

    for w in caught:
        if getattr(w.category, "__module__", "").startswith("oxidize"):
            print(f"oxidize: warning: {w.message}", file=sys.stderr, flush=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _recipe(recipe_file: str, recipe_name: str):
    from oxidize.recipe import load_recipe

    return load_recipe(Path(recipe_file), recipe_name)


def _say(label: str, message: str) -> None:
    print(f"{label}: {message}", flush=True)


@_user_errors
def build_model_fingerprint(recipe_file: str, recipe_name: str, target: str) -> None:
    """Resolve the recipe's model and write its fingerprint record to ``model.json``."""
    from oxidize.embed import models
    from oxidize.util.atomic import write_json

    recipe = _recipe(recipe_file, recipe_name)
    resolved = recipe.resolve_model()
    start = time.perf_counter()
    record = models.fingerprint_record(resolved)
    write_json(target, record)
    _say(f"{recipe_name}:model", f"{recipe.embedding_model} fingerprint {record['fingerprint'][:12]} "
                                 f"({time.perf_counter() - start:.2f}s)")


@_user_errors
def build_git_eventlog(recipe_file: str, recipe_name: str, target: str) -> None:
    """Scrape the recipe's git repository into its event log (oxidize/gitlog/scrape.py)."""
    from oxidize.gitlog.scrape import scrape

    recipe = _recipe(recipe_file, recipe_name)
    label = f"{recipe_name}:eventlog"
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    done = scrape(recipe.eventlog.repo, Path(target), say=lambda line: _say(label, line),
                  notes=recipe.eventlog.notes)
    skipped = ", ".join(f"{n} {why}" for why, n in (done.get("files_skipped") or {}).items())
    _say(label, f"{done['new_commits']:,} new commit(s) up to {done['head'][:10]}"
                + (f"; {done.get('files_described', 0):,} file(s) described from their content"
                   if "files_described" in done else "")
                + (f" ({skipped} skipped)" if skipped else "") + f": {target}")


@_user_errors
def build_described_files(recipe_file: str, recipe_name: str, target: str) -> None:
    """Describe the files of the repository a patina checkout's log lives in, from their
    content at HEAD (oxidize/gitlog/scrape.py: ``describe_files``)."""
    from oxidize.engine.layout import files_repository
    from oxidize.gitlog.scrape import describe_files

    recipe = _recipe(recipe_file, recipe_name)
    repo = files_repository(recipe)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    done = describe_files(repo, Path(target))
    label = f"{recipe_name}:files"
    if not done.get("repository", True):
        _say(label, f"{repo} is not a git repository with commits: files keep their path texts")
        return
    skipped = ", ".join(f"{n} {why}" for why, n in (done.get("files_skipped") or {}).items())
    _say(label, f"{done['files_described']:,} file(s) at {done['head'][:10]} described from their content"
                + (f" ({skipped} skipped)" if skipped else "") + f": {target}")


def _open_log(recipe, eventlog: str, out_dir: str):
    """The event log, with the described files beside it where the build writes them for
    this recipe (``build/R/file_texts.sqlite``, see :func:`build_described_files`)."""
    from oxidize.engine.layout import files_repository
    from oxidize.eventlog import open_eventlog

    log = open_eventlog(Path(eventlog))
    described = Path(out_dir).parent / "file_texts.sqlite"
    if files_repository(recipe) is not None and described.is_file():
        log.described_files = described
    return log


@_user_errors
def build_pairs(recipe_file: str, recipe_name: str, projection: str, eventlog: str, out_dir: str) -> None:
    """Read the event log (one snapshot) and write the texts table and triplets."""
    from oxidize.pairs import generate_pairs, write_pairs

    recipe = _recipe(recipe_file, recipe_name)
    proj = recipe.projection(projection)
    label = f"{recipe_name}:{projection}"
    start = time.perf_counter()
    with _open_log(recipe, eventlog, out_dir) as log:
        pairset = generate_pairs(log, proj.training, label=label)
    # The keys these pairs were made with: the lock checks them against the recipe it records.
    pairset.stats["settings_sha256"] = digest(proj.pair_settings())
    write_pairs(pairset, Path(out_dir))
    _say(label, f"pairs written to {out_dir} ({time.perf_counter() - start:.2f}s)")


@_user_errors
def build_embeddings(recipe_file: str, recipe_name: str, projection: str, out_dir: str,
                     model_json: str, cache_file: str) -> None:
    """Embed the texts table, taking every text already embedded from the cache."""
    from oxidize.util.atomic import write_json
    from oxidize.embed.cache import EmbeddingCache, embed_to_file
    from oxidize.pairs import read_texts

    recipe = _recipe(recipe_file, recipe_name)
    label = f"{recipe_name}:{projection}"
    out = Path(out_dir)
    texts = read_texts(out / "texts.jsonl")
    record = json.loads(Path(model_json).read_text(encoding="utf-8"))
    resolved = recipe.resolve_model()

    encoder_factory = _encoder_factory(resolved, cache_file, record)

    start = time.perf_counter()
    # A custom model's dimension is known only once its ONNX graph is loaded.
    dim = record.get("dim") or encoder_factory().dim
    with EmbeddingCache(Path(cache_file), cache_key(record), int(dim)) as cache:
        # Streamed from the cache into the file: the matrix is never held in memory.
        stats = embed_to_file(texts, cache, encoder_factory, out / "embeddings.npy",
                              progress_label=f"{label} embed")
    seconds = time.perf_counter() - start
    where = encoder_factory.describe()
    write_json(out / "embed.json", {
        "model": recipe.embedding_model,
        "model_fingerprint": record["fingerprint"],
        "texts": stats.total,
        "unique": stats.unique,
        "cached": stats.cached,
        "embedded": stats.embedded,
        "dim": int(dim),
        "oxidize_version": __version__,
        "where": where,
    })
    remote = (f" on {where['workers']} Dask worker(s) at {where['scheduler']} ({where['shards']} shards)"
              if where.get("executor") == "dask" else "")
    _say(label, f"embedded {stats.embedded:,} texts{remote}, {stats.cached:,} from the cache "
                f"({stats.total:,} in the table, {seconds:.2f}s)")


def cache_key(record: dict) -> str:
    """The embedding cache's key of a model: its fingerprint and the platform key (the
    arithmetic: a vector made with int8 kernels never stands in for a float32 one)."""
    from oxidize.platform import platform_key

    return f"{record['fingerprint']}@{platform_key()}"


def _encoder_factory(resolved, cache_file: str, record: dict):
    """The model's encoder, made once and only when some text is not in the cache: in this
    process, or on the Dask cluster that $OXIDIZE_EXECUTOR selects (oxidize/embed/executor.py)."""
    from oxidize.embed.executor import EncoderFactory

    # The optimised graph is kept beside the embedding cache (build/.cache/onnx/).
    return EncoderFactory(resolved, record, record["fingerprint"], Path(cache_file).parent / "onnx")


@_user_errors
def build_patina_export(recipe_file: str, recipe_name: str, projection: str, eventlog: str,
                        out_dir: str, model_json: str, cache_file: str, export_dir: str) -> None:
    """Write the projection into patina's own files, or leave patina on its raw search
    (oxidize/patina/export.py)."""
    from oxidize.util.atomic import write_json
    from oxidize.patina.export import check_config_model, export_projection

    recipe = _recipe(recipe_file, recipe_name)
    warning = check_config_model(Path(recipe_file).resolve().parent.parent, recipe.embedding_model)
    if warning:
        print(f"oxidize: warning: {warning}", file=sys.stderr, flush=True)
    record = export_projection(recipe, projection, Path(eventlog), Path(out_dir),
                               json.loads(Path(model_json).read_text(encoding="utf-8")),
                               Path(cache_file), Path(export_dir))
    write_json(Path(out_dir) / "export.json", record)


@_user_errors
def build_weights(recipe_file: str, recipe_name: str, projection: str, out_dir: str) -> None:
    """Train the projection's MLP on the cached embeddings and write its weights."""
    import numpy as np

    from oxidize.pairs import REFERENCE_STARTS, read_heldout, read_triplets
    from oxidize.projection import export_onnx
    from oxidize.train.trainer import save_weights, train_projection

    recipe = _recipe(recipe_file, recipe_name)
    proj = recipe.projection(projection)
    label = f"{recipe_name}:{projection}"
    out = Path(out_dir)
    embeddings = np.load(out / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    triplets = read_triplets(out / "triplets.npy")
    # Epochs and the start map are chosen on the validation part; the test part
    # (heldout.npy) is only recorded per epoch (training.json, the picture), never chosen on.
    validation = read_heldout(out / "validation.npy")
    test = read_heldout(out / "heldout.npy")
    if len(validation) == 0 and len(test):
        validation = test
        _say(label, "no validation queries (the held-out groups all share one moment): the "
                    "start map and the epoch are chosen on the test part, which eval then reports")
    in_dim, hidden, out_dim = proj.layers
    if in_dim is not None and in_dim != embeddings.shape[1]:
        raise TrainingError(
            f"{recipe.path}: projections.{projection}.layers: layers[0] is {in_dim} but the "
            f"embeddings of model '{recipe.embedding_model}' have {embeddings.shape[1]} dimensions; "
            f"set layers[0] to {embeddings.shape[1]} or null")
    t = proj.training
    if t.negatives == "hard":
        from oxidize.pairs import read_groups
        from oxidize.train.negatives import POOL, mine_hard_negatives

        triplets, kept = mine_hard_negatives(embeddings, triplets, read_groups(out / "groups.npy"),
                                             read_heldout(out / "related.npy"), t.seed)
        _say(label, f"hard negatives: each triplet's negative drawn from its anchor's {POOL} nearest "
                    f"unrelated texts ({kept:,} of {len(triplets):,} kept a random one)")
    # The memory map itself, not a copy: training reads only the rows it uses
    # (train._validate copies only if the file were not C-ordered float32).
    result = train_projection(
        embeddings, triplets,
        hidden=hidden, out=out_dim, epochs=proj.epochs, batch_size=proj.batch_size,
        learning_rate=t.learning_rate, margin=t.margin, seed=t.seed, optimizer=t.optimizer,
        momentum=t.momentum, weight_decay=t.weight_decay, label=label, in_dim=in_dim,
        init=t.init, heldout=validation, patience=t.patience, start_penalty=t.start_penalty,
        loss=t.loss, temperature=t.temperature, report=test,
        reference_start=REFERENCE_STARTS[t.pair_type])
    save_weights(out / "weights.safetensors", result, settings_sha256=digest(proj.train_settings()))
    export_onnx(out / "projection.onnx", result.weights)
    _say(label, f"trained {len(triplets):,} triplets × {len(result.losses)} epochs in {result.seconds:.1f}s, "
                f"loss {result.losses[0]:.4f} → {result.losses[-1]:.4f}; {training_verdict(result)}"
                + (f"; {result.stop_note}" if result.stop_note else ""))


def training_verdict(result) -> str:
    """Whether training improved on its start map, and by how much, in words."""
    mrr = result.heldout_mrr
    if result.chosen_epoch is None or not mrr:
        return "kept the last epoch (no held-out data to choose with)"
    if result.chosen_epoch == 0:
        return (f"training did not improve on the start map (validation mrr@10 {mrr[0]:.4f}); "
                f"kept epoch 0")
    best = mrr[result.chosen_epoch]
    return (f"training improved validation mrr@10 from {mrr[0]:.4f} (start map) to {best:.4f} "
            f"({best - mrr[0]:+.4f}); kept epoch {result.chosen_epoch}")
