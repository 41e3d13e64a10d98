"""Search: a projection's population, indexed, and a query's path through it.

A query's path (``doit query``, ``doit bench``, the eval step, :func:`open_search`)::

    text ──► searcher.ProjectionSearch.query
               ├─► embed (the model's query prefix) ──► projection (the index's own weights)
               │     ├─► projection dense list   index.Searcher.nearest: exact f16 rows
               │     │                           (vector_rows) or the HNSW graph re-ranked
               │     └─► raw dense list          the plain embeddings' rows, exact
               ├─► lexical list                  lexical: SQLite FTS5, BM25, plain words
               └─► fusion.Fusion.rank ──► index.Searcher.hits ──► snippets.best_snippet
                    (the lists merged as the     (key → item row;    (the sentence that answers)
                    build chose: choice.py)       a file once)

What a build writes for it (``R:P.index``)::

    event log ──► population.search_population ──► embeddings (cache) ──► projected
              ──► index.write_index: index.usearch + vector rows + index.sqlite (items, FTS5,
                  the weights)   or update.update_index: the same files grown in place
              ──► recall.calibrate: how wide the graph is searched

And how search is measured: :mod:`.queryset` reads query sets (patina's bench format) and
scores the five searches on them.

Modules: :mod:`.searcher` (the query path above, :func:`open_search`), :mod:`.population`
(what is searchable, with stable keys), :mod:`.index` (the files and :class:`Searcher`),
:mod:`.update` (an index grown in place), :mod:`.recall` (the graph's expansion),
:mod:`.vector_rows` (f16 rows, exact and re-ranked search), :mod:`.lexical` (FTS5),
:mod:`.fusion`, :mod:`.snippets`, :mod:`.queryset`, :mod:`.usearch_import` (USearch after
onnxruntime). Everything here imports numpy, onnxruntime and USearch inside functions
only: the index task's format constant is read when doit lists tasks.
"""

from oxidize.search.searcher import MODES, ProjectionSearch, open_search

__all__ = ["MODES", "ProjectionSearch", "open_search"]
