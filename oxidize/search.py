"""Searching with a built projection: a query text in, the nearest items of its index out.

:class:`ProjectionSearch` is what ``doit query`` uses and what a Python user holds open for
many queries (the model, the weights and the index load once)::

    from oxidize.search import open_search
    search = open_search("example:semantic")          # in the project's folder
    for hit in search.query("why did the cache miss", k=5):
        print(hit.rank, hit.score, hit.snippet)

The query is embedded with the model's *query* prefix, the indexed items were embedded with
its *passage* prefix (E5: ``query: `` / ``passage: ``), and the projection is applied to the
query exactly as to the items (:func:`oxidize.projection.project`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oxidize.errors import SearchError
from oxidize.index import Hit, Searcher


class ProjectionSearch:
    """One projection's search: its model, weights and two indexes (projected and base).

    Args:
        recipe: the loaded :class:`oxidize.recipe.Recipe`.
        projection: the projection's name.
        directory: its build folder (``build/R/P``).
    """

    def __init__(self, recipe: Any, projection: str, directory: Path | str,
                 cache_dir: Path | str | None = None):
        from oxidize.projection import load_weights

        self.recipe = recipe
        self.directory = Path(directory)
        self.label = f"{recipe.name}:{projection}"
        self.weights = load_weights(self.directory / "weights.safetensors")
        self._cache_dir = Path(cache_dir) if cache_dir else self.directory.parent.parent / ".cache"
        self._encoder = None
        self._searchers: dict[bool, Searcher] = {}

    def encoder(self):
        if self._encoder is None:
            from oxidize.embed.encoder import Encoder

            resolved = self.recipe.resolve_model()
            model_fp = None
            try:
                model_fp = json.loads((self.directory.parent / "model.json").read_text())["fingerprint"]
            except (OSError, ValueError, KeyError):
                pass  # no record: the encoder fingerprints the model itself
            self._encoder = Encoder(resolved, graph_cache_dir=self._cache_dir / "onnx", model_fp=model_fp)
        return self._encoder

    def searcher(self, base: bool = False) -> Searcher:
        if base not in self._searchers:
            searcher = Searcher(self.directory, base=base)
            want = self.weights["w1"].shape[1] if base else self.weights["w2"].shape[0]
            if searcher.dim != want:
                raise SearchError(f"{self.directory}: the index holds {searcher.dim}-dimensional "
                                  f"vectors but the weights {'take' if base else 'give'} {want}; "
                                  f"rebuild it with `doit {self.label}`")
            self._searchers[base] = searcher
        return self._searchers[base]

    def embed_query(self, text: str):
        """The query's base embedding (query prefix), ``float32 [dim]``."""
        vector = self.encoder().encode([text], kind="query")[0]
        if vector.shape[0] != self.weights["w1"].shape[1]:
            raise SearchError(f"{self.label}: the model gives {vector.shape[0]}-dimensional "
                              f"embeddings but the weights take {self.weights['w1'].shape[1]}; "
                              f"rebuild with `doit {self.label}`")
        return vector

    def query(self, text: str, k: int = 10, base: bool = False) -> list[Hit]:
        """The ``k`` nearest items to ``text`` in the projection (or, with ``base``, in the
        plain embedding of the same items), best first."""
        if not text.strip():
            raise SearchError("the query is empty")
        from oxidize.projection import project

        vector = self.embed_query(text)
        searcher = self.searcher(base)
        return searcher.search(vector if base else project(self.weights, vector[None, :])[0], k)


def open_search(name: str, root: Path | str = ".") -> ProjectionSearch:
    """The :class:`ProjectionSearch` of ``RECIPE:PROJECTION`` in the project at ``root``."""
    from oxidize.engine.layout import Layout, build_dir
    from oxidize.engine.tasks import load_recipes

    root = Path(root)
    recipe_name, _, projection = name.partition(":")
    for recipe in load_recipes(root):
        if recipe.name == recipe_name:
            recipe.projection(projection)  # a clear error naming the projections
            base = build_dir(root)
            return ProjectionSearch(recipe, projection, root / Layout(recipe_name, projection, base).dir,
                                    cache_dir=root / base / ".cache")
    raise SearchError(f"no recipe {recipe_name!r} in {root}")
