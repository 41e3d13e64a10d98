"""Searching with a built projection: a query text in, the nearest items of its index out.

:class:`ProjectionSearch` is what ``doit query`` uses and what a Python user holds open for
many queries (the model, the weights and the index load once)::

    from oxidize.search import open_search
    search = open_search("example:semantic")          # in the project's folder
    for hit in search.query("why did the cache miss", k=5):
        print(hit.rank, hit.score, hit.snippet)

The query is embedded with the model's *query* prefix, the indexed items were embedded with
its *passage* prefix (E5: ``query: `` / ``passage: ``), and the projection is applied to the
query exactly as to the items (:func:`oxidize.projection.project`). By default
(``mode="auto"``) the lexical (BM25), raw and projected lists of the same items are merged
the way the build chose on the project's history questions (:mod:`oxidize.search.choice`);
in a file population each file is shown once, at its best item (a definition credits its
file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oxidize.errors import SearchError
from oxidize.search.index import Hit, Searcher


#: Search modes: ``auto`` (the default) is the search the build chose for the index on the
#: project's history questions (oxidize/search/choice.py), ``hybrid`` the default fusion
#: (oxidize/search/fusion.py); ``dense`` and ``lexical`` search one list alone. Any name of
#: the fusion menu (``fusion.MENU``) is a mode too.
MODES = ("auto", "hybrid", "dense", "lexical")


class ProjectionSearch:
    """One projection's search: its model, weights, two vector indexes (projected and base)
    and the lexical index.

    Args:
        recipe: the loaded :class:`oxidize.recipe.Recipe`.
        projection: the projection's name.
        directory: its build folder (``build/R/P``).

    The query is projected with the weights stored in the index (the ones its items were
    projected with), not with ``weights.safetensors``: after a retrain that did not rebuild
    the index, the stale index is still searched consistently.
    """

    def __init__(self, recipe: Any, projection: str, directory: Path | str,
                 cache_dir: Path | str | None = None):
        self.recipe = recipe
        self.directory = Path(directory)
        self.label = f"{recipe.name}:{projection}"
        self._cache_dir = Path(cache_dir) if cache_dir else self.directory.parent.parent / ".cache"
        self._encoder = None
        self._weights = None
        self._searchers: dict[bool, Searcher] = {}
        self._pool = None
        #: Lines worth telling the user (an index without its lexical part), said once each.
        self.notices: list[str] = []

    @property
    def weights(self):
        """The projection's weights as the index was built with them (an index written before
        they were kept in it: ``weights.safetensors``)."""
        if self._weights is None:
            self.searcher(next(iter(self._searchers), False))
        return self._weights

    def encoder(self):
        if self._encoder is None:
            from oxidize.embed.executor import shared_encoder

            resolved = self.recipe.resolve_model()
            model_fp = None
            try:
                model_fp = json.loads((self.directory.parent / "model.json").read_text())["fingerprint"]
            except (OSError, ValueError, KeyError):
                pass  # no record: the encoder fingerprints the model itself
            self._encoder = shared_encoder(resolved, model_fp, self._cache_dir / "onnx")
        return self._encoder

    def searcher(self, base: bool = False) -> Searcher:
        if base not in self._searchers:
            searcher = Searcher(self.directory, base=base)
            if self._weights is None:
                from oxidize.projection import load_weights

                stored = searcher.weights()
                self._weights = stored if stored is not None else \
                    load_weights(self.directory / "weights.safetensors")
            self._recall_notice(searcher)
            want = self._weights["w1"].shape[1] if base else self._weights["w2"].shape[0]
            if searcher.dim != want:
                raise SearchError(f"{self.directory}: the index holds {searcher.dim}-dimensional "
                                  f"vectors but the weights {'take' if base else 'give'} {want}; "
                                  f"rebuild it with `doit {self.label}`")
            self._searchers[base] = searcher
        return self._searchers[base]

    def embed_query(self, text: str):
        """The query's base embedding (query prefix), ``float32 [dim]``."""
        return self.embed_queries([text])[0]

    def fusion(self, mode: str | None = None, base: bool = False):
        """The :class:`~oxidize.search.fusion.Fusion` a query runs
        (:func:`oxidize.search.fusion.resolve`): ``auto`` (or ``None``) is what the build
        chose for this index on the project's history questions (:mod:`oxidize.search.choice`),
        ``hybrid`` the lexical list fused with the projection's, ``dense`` the projection's
        list alone, ``lexical`` BM25 alone, or any name of the fusion menu. ``base`` puts the
        plain embedding in the projection's place."""
        from oxidize.search import fusion

        try:
            return fusion.resolve(mode, base, self.chosen().get("search") if mode in (None, "auto") else None)
        except ValueError as exc:
            raise SearchError(str(exc)) from None

    def chosen(self) -> dict:
        """What the build chose for this index (``meta.search_choice``: the search, the
        questions it was measured on, why), ``{}`` where it chose nothing."""
        return self.searcher(False).meta.get("search_choice") or {}

    def embed_queries(self, texts: list[str]):
        """Several queries' base embeddings at once (query prefix), ``float32 [n, dim]``."""
        vectors = self.encoder().encode(list(texts), kind="query")
        if len(texts) and vectors.shape[1] != self.weights["w1"].shape[1]:
            raise SearchError(f"{self.label}: the model gives {vectors.shape[1]}-dimensional "
                              f"embeddings but the weights take {self.weights['w1'].shape[1]}; "
                              f"rebuild with `doit {self.label}`")
        return vectors

    def source_ids(self, keys) -> dict[int, str]:
        """The source id (session id, file path, commit sha, function) of each of ``keys``."""
        import sqlite3

        keys = list(keys)
        searcher = self.searcher(False)
        out: dict[int, str] = {}
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                out.update(searcher.db.execute(f"SELECT key, source_id FROM items WHERE key IN "
                                               f"({','.join('?' * len(chunk))})", chunk).fetchall())
        except sqlite3.DatabaseError as exc:
            raise searcher._damaged(exc) from None
        return out

    def query(self, text: str, k: int = 10, base: bool = False, mode: str | None = None,
              snippets: bool = True) -> list[Hit]:
        """The ``k`` best items for ``text``, best first.

        ``mode``: see :meth:`fusion` (``auto``, the default, is what the build chose;
        ``hybrid``, ``dense``, ``lexical`` or a name of the fusion menu). ``base`` leaves the
        projection out: the plain embedding is the dense side. A hit's ``score`` is its
        cosine (dense), its BM25 score (lexical) or its fused score. ``snippets=False`` skips
        choosing each hit's best sentence by embedding (its first matching sentence is still
        shown).
        """
        if not text.strip():
            raise SearchError("the query is empty")
        spec = self.fusion(mode, base)
        searcher = self.searcher(spec.lists == ("raw",))  # the index lists() searches
        if "lexical" in spec.lists and not searcher.has_lexical():
            if spec.lists == ("lexical",):
                searcher.lexical(text, k)  # raises the error that says how to rebuild
            self._notice(f"the index of {self.label} has no lexical part (built by an older "
                         f"oxidize); searching dense only — `doit {self.label}` rebuilds it")
            from oxidize.search.fusion import BY_NAME

            spec = BY_NAME["raw" if base else "dense"]
        from oxidize.search.fusion import POOL

        lists, vector = self.lists(text, spec.lists, k)
        files = self.files()
        fused = spec.rank(lists, POOL if files else k)
        if files:  # a definition's hit credits its file: each file once, at its best item
            fused = self.by_file(fused, k)
        ranked = [(key, score, ranks.get("dense", ranks.get("raw")), ranks.get("lexical"))
                  for key, score, ranks in fused]
        nearest = self._nearest_sentence(text, vector) if snippets else None
        hits = searcher.hits(ranked, query=text, nearest=nearest)
        return [self._as_file(hit) for hit in hits] if files else hits

    def files(self) -> bool:
        """Whether the index is a file population (files and their definitions)."""
        from oxidize.search.population import FILE_POPULATIONS

        return self.searcher(False).meta.get("pair_type") in FILE_POPULATIONS

    def by_file(self, ranked: list, k: int) -> list:
        """The first ``k`` rows of ``ranked`` (best first) whose items answer for different
        files (:func:`oxidize.search.population.credited`)."""
        from oxidize.search.population import credited

        ids = self.source_ids([row[0] for row in ranked])
        seen: set[str] = set()
        out = []
        for row in ranked:
            file = credited(ids.get(row[0], ""))
            if file not in seen:
                seen.add(file)
                out.append(row)
                if len(out) == k:
                    break
        return out

    @staticmethod
    def _as_file(hit: Hit) -> Hit:
        """A definition's hit shown as its file's, with what matched."""
        from dataclasses import replace

        from oxidize.search.population import DEFINED_IN, credited, stable_key

        if DEFINED_IN not in hit.source_id:
            return hit
        file = credited(hit.source_id)
        name = hit.source_id[len(file) + len(DEFINED_IN):]
        return replace(hit, source_id=file, event_type="file", key=stable_key(file),
                       snippet=f"({name}: {hit.snippet})",
                       match={"source_id": hit.source_id, "event_type": hit.event_type, "snippet": hit.snippet})

    def lists(self, text: str, names: tuple[str, ...], k: int = 10, vector=None):
        """The ranked lists ``names`` (of ``lexical``, ``dense``, ``raw``) of one query, each
        ``[(key, score)]`` best first, as deep as fusion reads them
        (:data:`~oxidize.search.fusion.POOL`; ``k`` for a list searched alone), and the
        query's plain embedding (``None`` when no dense list was asked for). ``vector``: the
        query's embedding when the caller has it (the eval step embeds its questions at once)."""
        from oxidize.search.fusion import POOL

        pool = k if len(names) == 1 and not self.files() else max(k, POOL)
        searcher = self.searcher(names == ("raw",))
        # The lexical search runs in a second thread while the query is embedded and the
        # vector indexes searched (SQLite, onnxruntime and USearch release the GIL): a hybrid
        # query costs about the longer of the two sides, not their sum.
        lexical = self._background().submit(searcher.lexical, text, pool) \
            if "lexical" in names else None
        out: dict[str, list[tuple[int, float]]] = {}
        if "dense" in names or "raw" in names:
            if vector is None:
                vector = self.embed_query(text)
            if names == ("raw",):  # the plain embedding alone (--base, --compare): exact
                out["raw"] = self.searcher(True).nearest(vector, pool)
            else:
                from oxidize.projection import project

                projected = project(self.weights, vector[None, :])[0]
                if "raw" in names:
                    out["raw"], dense = self._raw_list(searcher, vector, projected, pool, lexical)
                    if "dense" in names:
                        out["dense"] = dense
                else:
                    out["dense"] = searcher.nearest(projected, pool)
        if lexical is not None:
            out["lexical"] = lexical.result()
        return out, vector

    def _raw_list(self, searcher: Searcher, vector, projected, pool: int, lexical_future):
        """The raw-embedding list fused with others, and the projection's dense list. Up to
        :data:`~oxidize.search.index.EXACT_MAX_FUSED` items the raw list is an exact search
        of the plain embeddings; above, the raw cosine ranking of the candidates the
        projection's graph (its :data:`~oxidize.search.vector_rows.RERANK_POOL` nearest) and
        the lexical index found — no scan of every plain vector per query (a million items
        take 75–100 ms to scan). The projection is a smooth map of the plain embedding: its
        nearest items hold the plain embedding's nearest ones (the same MRR@10 as the full raw
        list on oxidize's question sets)."""
        from oxidize.search.index import EXACT_MAX_FUSED
        from oxidize.search.vector_rows import RERANK_POOL

        plain = self.searcher(True)
        if len(plain) <= EXACT_MAX_FUSED:
            return plain.nearest(vector, pool), searcher.nearest(projected, pool)
        wide = searcher.nearest(projected, max(pool, RERANK_POOL))
        candidates = [key for key, _ in wide] + \
            ([key for key, _ in lexical_future.result()] if lexical_future is not None else [])
        return plain.rerank(vector, candidates, pool), wide[:pool]

    def _background(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oxidize-lexical")
        return self._pool

    def _nearest_sentence(self, text: str, vector):
        """For a hit that shares no word with the query: which of its sentences is nearest to
        the query by the plain embedding (oxidize/search/snippets.py)."""
        def nearest(sentences: list[str]) -> int:
            import numpy as np

            query = vector if vector is not None else self.encoder().encode([text], kind="query")[0]
            embedded = self.encoder().encode(sentences, kind="passage")
            return int(np.argmax(embedded @ query))

        return nearest

    def _recall_notice(self, searcher: Searcher) -> None:
        """One line when the index's graph search was measured below the recall target."""
        from oxidize.search.index import EXACT_MAX
        from oxidize.search.recall import RECALL_TARGET

        measured = searcher.searched.get("recall@10")
        if measured is not None and measured < RECALL_TARGET and not searcher.searched.get("exact") \
                and len(searcher) > EXACT_MAX:
            which = "plain-embedding" if searcher.base else "projected"
            self._notice(f"the {which} index of {self.label} finds about {measured:.2f} of the true "
                         f"10 nearest items in its graph (measured when built; target {RECALL_TARGET})")

    def _notice(self, line: str) -> None:
        if line not in self.notices:
            self.notices.append(line)


def open_search(name: str, root: Path | str = ".") -> ProjectionSearch:
    """The :class:`ProjectionSearch` of ``RECIPE:PROJECTION`` in the project at ``root``."""
    from oxidize.engine.layout import Layout, build_dir
    from oxidize.engine.discovery import load_recipes

    root = Path(root)
    recipe_name, _, projection = name.partition(":")
    for recipe in load_recipes(root):
        if recipe.name == recipe_name:
            recipe.projection(projection)  # a clear error naming the projections
            base = build_dir(root)
            return ProjectionSearch(recipe, projection, root / Layout(recipe_name, projection, base).dir,
                                    cache_dir=root / base / ".cache")
    raise SearchError(f"no recipe {recipe_name!r} in {root}")
