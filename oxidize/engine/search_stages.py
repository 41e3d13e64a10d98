"""The doit actions of search: the index step (with the choice of the search it answers
with) and the eval step (the projection scored on held-out data, the history questions and
the query sets). Glue from files on disk to :mod:`oxidize.search`; the shared pieces
(error reporting, the recipe, the encoder factory) are :mod:`oxidize.engine.stages`'.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from oxidize.engine.stages import _encoder_factory, _open_log, _recipe, _say, _user_errors, cache_key
from oxidize.errors import OxidizeError


@_user_errors
def build_index(recipe_file: str, recipe_name: str, projection: str, eventlog: str,
                out_dir: str, model_json: str, cache_file: str) -> None:
    """Embed the projection's search population (through the cache), project it, and write
    the search index (oxidize/search/index.py)."""
    from oxidize.embed.cache import EmbeddingCache, embed_with_cache
    from oxidize.engine.fingerprint import file_sha256
    from oxidize.search.index import write_index
    from oxidize.search.update import summary, update_index
    from oxidize.search.population import search_population
    from oxidize.projection import load_weights, project

    recipe = _recipe(recipe_file, recipe_name)
    proj = recipe.projection(projection)
    label = f"{recipe_name}:{projection}"
    out = Path(out_dir)
    start = time.perf_counter()
    with _open_log(recipe, eventlog, out_dir) as log:
        items = search_population(log, proj)
    if not items:
        raise OxidizeError(f"{eventlog}: nothing to index for {label} ({proj.training.pair_type}): "
                           f"no event of the kinds it searches (see README, 'Searching')")
    record = json.loads(Path(model_json).read_text(encoding="utf-8"))
    weights = load_weights(out / "weights.safetensors")
    dim = int(weights["w1"].shape[1])
    factory = _encoder_factory(recipe.resolve_model(), cache_file, record)
    with EmbeddingCache(Path(cache_file), cache_key(record), dim) as cache:
        base, stats = embed_with_cache([item.text for item in items], cache, factory,
                                       progress_label=f"{label} index")
    projected = project(weights, base)
    meta = {"recipe": recipe_name, "projection": projection, "model": recipe.embedding_model,
            "model_fingerprint": record["fingerprint"],
            "weights_sha256": file_sha256(out / "weights.safetensors"),
            "pair_type": proj.training.pair_type}
    why: list[str] = []
    updated = update_index(out, items, base, projected, meta, out / "weights.safetensors", why)
    if updated is None:
        write_index(out, items, base, projected, meta, weights_file=out / "weights.safetensors")
        how = (f"the index on disk was damaged ({why[0]}): indexed {len(items):,} items afresh" if why
               else f"indexed {len(items):,} items")
    else:
        how = summary(updated)
    _say(label, f"{how} ({stats.unique:,} distinct texts: {stats.embedded:,} "
                f"embedded, {stats.cached:,} from the cache) in {time.perf_counter() - start:.2f}s: "
                f"{out / 'index.usearch'}")
    _choose_search(recipe, proj.name, out, record, factory, cache_file, dim, label)


def _choose_search(recipe, projection: str, out: Path, record: dict, factory, cache_file: str,
                   dim: int, label: str) -> None:
    """Rank every search of the fusion menu on the history questions, keep the one that wins
    (oxidize/search/choice.py) and record it in the index's ``meta``; one line says which."""
    from oxidize.embed.cache import EmbeddingCache, embed_with_cache
    from oxidize.search.choice import choose, question_lists, score_menu
    from oxidize.search.index import record_meta
    from oxidize.search.queryset import queries_of
    from oxidize.search.searcher import ProjectionSearch

    start = time.perf_counter()
    history = json.loads((out / "history_queries.json").read_text(encoding="utf-8"))
    queries = queries_of(history, out / "history_queries.json")
    search = ProjectionSearch(recipe, projection, out)
    if queries:
        with EmbeddingCache(Path(cache_file), cache_key(record), dim, kind="query") as cache:
            vectors, _ = embed_with_cache([q.query for q in queries], cache, factory)
        scores = score_menu(search, queries, lists=question_lists(search, queries, vectors=vectors))
    else:
        from oxidize.search.choice import MenuScores

        scores = MenuScores([], {})
    choice = choose(scores)
    kind = history.get("kind") or "history questions"
    record_meta(out, "search_choice", {**choice.record(), "kind": kind,
                                       "scores": {name: scores.summary(name) for name in scores.names}})
    seconds = time.perf_counter() - start
    if choice.search != choice.default:
        _say(label, f"search: {choice.search} (mrr@10 {choice.mrr[choice.search]:.3f} on {choice.questions} "
                    f"{kind}, default {choice.default} {choice.mrr[choice.default]:.3f}): {choice.why} "
                    f"({seconds:.2f}s)")
    else:
        _say(label, f"search: the default, {choice.default}: {choice.why} ({seconds:.2f}s)")


@_user_errors
def build_eval(recipe_file: str, recipe_name: str, projection: str, out_dir: str) -> None:
    """Score the projection, the base embedding and random ranking on the held-out split.

    Writes ``metrics.json`` and ``training.png``, prints one summary line, and fails the
    task when the projection's ``gate`` is not met. With no held-out queries it says so
    and skips the comparison (the gate is not applied: there is nothing to judge by).
    """
    import numpy as np

    from oxidize.util.atomic import write_json
    from oxidize.evaluate import compare
    from oxidize.pairs import read_heldout
    from oxidize.plot import plot_training
    from oxidize.projection import load_weights

    recipe = _recipe(recipe_file, recipe_name)
    proj = recipe.projection(projection)
    label = f"{recipe_name}:{projection}"
    out = Path(out_dir)
    embeddings = np.load(out / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    heldout = read_heldout(out / "heldout.npy")
    weights = load_weights(out / "weights.safetensors")
    metrics = compare(embeddings, heldout, weights)
    metric = metrics["primary_metric"]
    training = json.loads((out / "training.json").read_text(encoding="utf-8"))
    m = metrics["heldout_queries"]
    levels = {k: (metrics[k] or {}).get(metric) for k in ("random", "base", "projection")}
    plot_training(out / "training.png", title=label, losses=training.get("losses", []),
                  heldout_mrr=training.get("heldout_mrr", []), test_mrr=training.get("test_mrr", []),
                  chosen_epoch=training.get("chosen_epoch"), base_mrr=levels["base"],
                  random_mrr=levels["random"], projection_mrr=levels["projection"],
                  loss_name=training.get("config", {}).get("loss", {}).get("loss", "triplet"))
    if m == 0:
        _say(label, f"eval: no held-out queries (training.holdout is "
                    f"{proj.training.holdout:g} or the held-out part has no related texts); "
                    f"comparison skipped")
    else:
        total = metrics.get("heldout_queries_total", m)
        queries = f"{m} held-out queries" if m == total else \
            f"{m:,} of {total:,} held-out queries, evenly spaced"
        start = (training.get("test_mrr") or [None])[0]
        gain = ""
        if start is not None and metric == "mrr@10":
            gain = (f"; training added {levels['projection'] - start:+.3f} to the start map's {start:.3f}"
                    if training.get("chosen_epoch") else "; the start map, training did not improve it")
        _say(label, f"eval on the test part: {metric} projection {levels['projection']:.3f} | base "
                    f"{levels['base']:.3f} | random {levels['random']:.3f} ({queries}){gain}")
    from oxidize.search.choice import MIN_QUESTIONS
    from oxidize.search.searcher import ProjectionSearch

    search = ProjectionSearch(recipe, proj.name, out)
    # The history figures are the index step's (its task is a dependency of this one).
    history = _history_results(search.chosen()) if (out / "index.sqlite").is_file() else None
    if history:
        metrics["history"] = history
        _say(label, _results_line(f"history: {history['queries']} {history['kind']}", history["results"],
                                  history["search"], (history["search_results"] or {}).get("mrr@10")))
    if proj.eval.queries:
        metrics["query_sets"] = _score_query_sets(search, recipe, proj, label)
    # gate: base judges on the history questions where the log has enough of them: they are
    # what users ask; the held-out file → file or note → note part is not.
    on_history = proj.gate == "base" and history and history["queries"] >= MIN_QUESTIONS
    failures = []
    if on_history:
        failures += [f"history questions: {what}" for what in _below_raw(history["results"])]
    elif m and proj.gate is not None and levels["projection"] < levels[proj.gate]:
        failures.append(f"held-out {metric} {levels['projection']:.4f} is below the {proj.gate} "
                        f"{levels[proj.gate]:.4f} ({m} queries); see {out / 'training.png'}")
    if proj.gate == "base":
        failures += [f"query set {r['name']}: {what}" for r in metrics.get("query_sets", ())
                     for what in _below_raw(r["results"])]
    write_json(out / "metrics.json", metrics)
    if failures:
        raise OxidizeError(f"{recipe.path}: projections.{projection}.gate: {label} fails its gate "
                           f"'{proj.gate}': " + "; ".join(failures))


#: What `gate: base` compares on question sets: the projection against the raw embedding,
#: dense against dense and hybrid against hybrid.
GATE_PAIRS = (("projection dense", "raw dense"), ("hybrid projection", "hybrid raw"))


def _below_raw(results: dict) -> list[str]:
    return [f"{mine} mrr@10 {results[mine]['mrr@10']:.4f} is below {raw} {results[raw]['mrr@10']:.4f}"
            for mine, raw in GATE_PAIRS if results[mine]["mrr@10"] < results[raw]["mrr@10"]]


def _history_results(chosen: dict) -> dict | None:
    """The five searches' figures on the history questions, from what the index step measured
    (``meta.search_choice``), and the search it chose; ``None`` without questions."""
    from oxidize.search.fusion import resolve
    from oxidize.search.queryset import CONFIGS

    scores = chosen.get("scores") or {}
    if not scores:
        return None
    results = {name: scores[resolve(mode, base).name] for name, mode, base in CONFIGS}
    search = chosen.get("search")
    return {"kind": chosen.get("kind", "history questions"), "queries": chosen.get("questions", 0),
            "results": results, "search": search, "search_results": scores.get(search),
            "why": chosen.get("why", "")}


def _results_line(what: str, results: dict, chosen: str | None = None, chosen_mrr: float | None = None) -> str:
    """One line of a question set's figures: the five searches, what the index answers with,
    and the projection named when it ranks the questions below the raw embedding."""
    r = {name: v["mrr@10"] for name, v in results.items()}
    line = (f"{what}: mrr@10 lexical {r['lexical']:.3f} | raw dense {r['raw dense']:.3f} | projection "
            f"dense {r['projection dense']:.3f} | hybrid raw {r['hybrid raw']:.3f} | hybrid projection "
            f"{r['hybrid projection']:.3f}")
    if chosen:
        line += f"; answers with {chosen}" + (f" {chosen_mrr:.3f}" if chosen_mrr is not None else "")
    if r["projection dense"] < r["raw dense"]:
        line += (f"; the projection ranks these questions below the raw embedding "
                 f"({r['projection dense']:.3f} vs {r['raw dense']:.3f})")
    return line


def _score_query_sets(search, recipe, proj, label: str) -> list[dict]:
    """Score each of ``eval.queries`` on the projection's search index: the five searches and
    the one the index answers with; one line each."""
    from oxidize.search.queryset import CONFIGS, load_query_set, score

    chosen = search.fusion("auto")
    scored = []
    for path in proj.eval.queries:
        query_set = load_query_set(recipe.path.parent / path)
        results = score(search, query_set, configs=(*CONFIGS, ("chosen", "auto", False)), timed=False)
        answers = results.pop("chosen")
        scored.append({"name": query_set.name, "path": path, "queries": len(query_set.queries),
                       "results": results, "search": chosen.name, "search_results": answers})
        _say(label, _results_line(f"query set {query_set.name} ({len(query_set.queries)} queries)", results,
                                  chosen.name, answers["mrr@10"]))
    return scored
