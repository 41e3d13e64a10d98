"""The export step: a projection into patina's own files, or patina left on its raw search.

For projection ``P`` of a patina checkout's recipe, in
``.patina/local/data/embeddings/<model>/projections/`` (where patina's ``scry`` looks):

* ``P.safetensors`` — the projection in patina's format (:mod:`oxidize.patina.weights`), only
  when it beats the raw embedding on questions — the recipe's query sets, else the history
  questions of the log (``metrics.json``), else the held-out test split; otherwise the file
  is removed, and patina searches with its raw query embedding;
* ``P.usearch`` — patina's population for ``P`` under patina's keys
  (:mod:`oxidize.patina.population`): the projected vectors when the projection is exported,
  else the raw embeddings, so that either way a patina query meets the vectors it expects.

The vectors are made as patina embeds: the passage prefix, mean pooling, L2, and the model's
own arithmetic — never oxidize's int8 rewrite (:mod:`oxidize.embed.int8`), which patina does
not run. They go through the embedding cache: under the build's own fingerprint when the
build runs the graph as it is (E5 as patina ships it: every text the index step embedded is
reused), else under the float arithmetic's fingerprint. A re-export after appending one note
embeds one text.

Files are written atomically; ``export.json`` in the projection's build folder records what
was written (with each file's size, mtime and sha256, or ``null`` for a file removed), and
the task is stale when a recorded file changed (:class:`oxidize.engine.fingerprint.RecordedFiles`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

EXPORT_FORMAT = 1


@dataclass(frozen=True)
class Verdict:
    """Whether the projection goes to patina, and the one-line reason."""

    export: bool
    reason: str
    #: Decided on people's questions (query sets), not on the held-out split.
    decided_by_queries: bool = False


def verdict(metrics: dict) -> Verdict:
    """Export only a projection that beats the raw embedding: patina measured its own projection
    far below raw E5 and dropped it. People's questions decide where there are any: the query
    sets (``eval.queries``), else the log's history questions (at least
    :data:`~oxidize.search.choice.MIN_QUESTIONS` of them) — the projection's dense MRR@10
    against the raw embedding's (patina searches the projection dense and fuses its own
    lexical side); else the held-out test split."""
    from oxidize.search.choice import MIN_QUESTIONS

    if metrics.get("query_sets"):
        return _query_set_verdict(metrics["query_sets"])
    history = metrics.get("history") or {}
    if (history.get("queries") or 0) >= MIN_QUESTIONS:
        return _query_set_verdict([{"name": "the history questions", "queries": history["queries"],
                                    "results": history["results"]}])
    metric = metrics.get("primary_metric", "mrr@10")
    queries = metrics.get("heldout_queries") or 0
    if not queries:
        return Verdict(False, "no held-out queries to show that it beats the raw embedding")
    proj = (metrics.get("projection") or {}).get(metric)
    base = (metrics.get("base") or {}).get(metric)
    if proj is None or base is None:
        return Verdict(False, f"metrics.json has no {metric} for the projection and the base")
    if proj > base:
        return Verdict(True, f"test {metric} {proj:.3f} beats the raw embedding's {base:.3f} "
                             f"({queries:,} queries)")
    return Verdict(False, f"test {metric} {proj:.3f} does not beat the raw embedding's {base:.3f} "
                          f"({queries:,} queries)")


def _query_set_verdict(sets: list[dict]) -> Verdict:
    n = sum(s["queries"] for s in sets)
    mine = sum(s["results"]["projection dense"]["mrr@10"] * s["queries"] for s in sets) / n
    raw = sum(s["results"]["raw dense"]["mrr@10"] * s["queries"] for s in sets) / n
    names = ", ".join(s["name"] for s in sets)
    which = names if names == "the history questions" else f"the query sets ({names}"
    which += f" ({n} queries)" if names == "the history questions" else f"; {n} queries)"
    if mine > raw:
        return Verdict(True, f"on {which} mrr@10 {mine:.3f} beats the raw embedding's {raw:.3f}",
                       decided_by_queries=True)
    return Verdict(False, f"on {which} mrr@10 {mine:.3f} does not beat the raw embedding's {raw:.3f}",
                   decided_by_queries=True)


def export_projection(recipe, projection: str, eventlog: Path, out_dir: Path, model_record: dict,
                      cache_file: Path, export_dir: Path) -> dict:
    """Write patina's files for ``projection``; return the ``export.json`` record.

    Raises:
        EventLogError: the database lacks the table that keys this name (see population).
        BuildError: the export folder is not writable.
    """
    import numpy as np

    from oxidize.util.atomic import atomic_path, unwritable
    from oxidize.embed.cache import EmbeddingCache, embed_with_cache
    from oxidize.embed.executor import EncoderFactory
    from oxidize.embed.models import fingerprint_for
    from oxidize.engine.fingerprint import target_state
    from oxidize.search.index import PATINA_EXPANSION_ADD, new_index
    from oxidize.patina.population import read_population
    from oxidize.patina.weights import fold, forward, write_patina_weights
    from oxidize.platform import platform_key
    from oxidize.projection import load_weights

    label = f"{recipe.name}:{projection}"
    start = time.perf_counter()
    decided = verdict(json.loads((out_dir / "metrics.json").read_text(encoding="utf-8")))
    population = read_population(eventlog, projection)
    weights_file = export_dir / f"{projection}.safetensors"
    index_file = export_dir / f"{projection}.usearch"
    resolved = recipe.resolve_model()
    model_fp = model_record["fingerprint"]
    if _rewritten(resolved):  # patina runs the graph as it is: no int8 rewrite
        from dataclasses import replace

        resolved = replace(resolved, spec=replace(resolved.spec, int8_matmul=False))
        model_fp = fingerprint_for(model_record, resolved.spec)
    weights = load_weights(out_dir / "weights.safetensors")
    dim = int(weights["w1"].shape[1])
    encoder = EncoderFactory(resolved, model_record, model_fp, cache_file.parent / "onnx")
    with EmbeddingCache(cache_file, f"{model_fp}@{platform_key()}", dim) as cache:
        raw, stats = embed_with_cache(population.texts, cache, encoder,
                                      progress_label=f"{label} patina export")
    if projection == "temporal" and not decided.decided_by_queries:
        # judge on the texts patina searches, not oxidize's own
        decided = _judged_on_patina_texts(out_dir, population, raw, weights) or decided
    tensors = fold(weights) if decided.export else None
    vectors = forward(tensors, raw) if tensors is not None else np.asarray(raw, np.float32)
    try:
        if population.keys:
            # patina's usearch reads f32 only, and searches at its own expansion: the graph
            # built as densely as before oxidize's own indexes changed (oxidize/search/index.py)
            index = new_index(int(vectors.shape[1]), dtype="f32", expansion_add=PATINA_EXPANSION_ADD)
            index.add(np.asarray(population.keys, np.uint64), np.ascontiguousarray(vectors, np.float32),
                      threads=os.cpu_count() or 1)
            with atomic_path(index_file) as tmp:
                index.save(str(tmp))
        else:  # patina skips an empty index, and its scry then falls back to lexical search
            index_file.unlink(missing_ok=True)
        if tensors is not None:
            write_patina_weights(weights_file, tensors)
        else:
            weights_file.unlink(missing_ok=True)
    except PermissionError:
        raise unwritable(export_dir) from None
    files = {str(path): (target_state(path) if path.exists() else None)
             for path in (weights_file, index_file)}
    record = {"format": EXPORT_FORMAT, "projection": projection, "exported": decided.export,
              "reason": decided.reason, "items": len(population.keys), "parts": population.parts,
              "absent_tables": population.absent, "dim": int(vectors.shape[1]),
              "arithmetic_fingerprint": model_fp, "files": files,
              "embedded": stats.embedded, "cached": stats.cached}
    seconds = time.perf_counter() - start
    if decided.export:
        said = (f"exported to patina: {weights_file} and {index_file.name} "
                f"({len(population.keys):,} items: {population.summary()}); {decided.reason}")
    else:
        said = (f"not exported to patina: {decided.reason}; patina searches the raw embedding"
                + (f" ({index_file}, {len(population.keys):,} items: {population.summary()})"
                   if population.keys else " (nothing to index: no index written)"))
    print(f"{label}: {said} [{stats.embedded:,} embedded, {stats.cached:,} from the cache, "
          f"{seconds:.2f}s]", flush=True)
    return record


def _judged_on_patina_texts(out_dir: Path, population, raw, weights) -> Verdict | None:
    """The verdict for ``temporal`` scored on patina's file texts (``File: path (kind)``) rather
    than oxidize's (``file path: words, kind``), which the projection trained on: the held-out
    files are found in patina's population by path. ``None`` when some file is not there
    (then oxidize's own metrics decide)."""
    import numpy as np

    from oxidize.evaluate import compare
    from oxidize.pairs import read_heldout, read_texts

    heldout = read_heldout(out_dir / "heldout.npy")
    texts = read_texts(out_dir / "texts.jsonl")
    row_of = {name: i for i, name in enumerate(population.names)}
    vectors = np.zeros((len(texts), raw.shape[1]), np.float32)
    for i in np.unique(heldout):
        path = texts[i][len("file "):].split(": ", 1)[0] if texts[i].startswith("file ") else None
        if path not in row_of:
            return None
        vectors[i] = raw[row_of[path]]
    judged = verdict(compare(vectors, heldout, weights))
    return Verdict(judged.export, judged.reason.replace(" (", " on patina's file texts (", 1))


def _rewritten(resolved) -> bool:
    """Whether the build's embed step runs this model on oxidize's int8 rewrite, so that patina's
    arithmetic needs vectors of its own. Otherwise (E5 as patina ships it, a CPU without int8
    dot products) the step's vectors are patina's, and the cache already holds many of them."""
    from oxidize.embed.int8 import cpu_has_int8_dot, int8_products

    if not resolved.spec.int8_matmul or not cpu_has_int8_dot():
        return False
    try:
        return int8_products(resolved.model_file) > 0
    except Exception:  # not a readable graph: the encoder's load reports it
        return True


def check_config_model(root: Path, model: str) -> str | None:
    """A warning when ``.patina/config.toml`` names another embedding model than the recipe:
    patina's scry looks under ``embeddings/<that model>/``, so the export would go unseen."""
    import tomllib

    config = root / ".patina" / "config.toml"
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    configured = (data.get("embeddings") or {}).get("model")
    if isinstance(configured, str) and configured.strip() and configured.strip() != model:
        return (f"{config}: [embeddings] model is '{configured}' but the recipe's embedding_model "
                f"is '{model}': patina's scry searches embeddings/{configured}/ and will not see "
                f"this export; make the two agree")
    return None

