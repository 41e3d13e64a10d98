"""``doit bench``: score a projection's search on query sets (patina's bench format).

A doit command plugin (``doit.COMMAND`` entry point ``bench``; also ``oxidize bench``)::

    doit bench SET.json [SET.json …] [-p RECIPE:PROJECTION] [--json]

For each set (oxidize/search/queryset.py) it runs every query through five searches — the raw
embedding (dense), the projection (dense), BM25 alone, and each dense side mixed with BM25
(hybrid raw, hybrid projection) — and the one ``doit query`` answers with (``auto``: what
the build chose on the project's history questions, named), and prints MRR@10, Recall@5,
Recall@10 and the warm latency per query (p50/p95). ``--json`` prints ``{set name: {search:
{mrr@10, recall@5, recall@10, queries, p50_ms, p95_ms}}}`` (``auto`` also names its ``search``).

Exit codes: 0 — scored; 3 — a set or the projection could not be read, with one line
naming the file and the query.
"""

from __future__ import annotations


from doit.exceptions import InvalidCommand

from oxidize.engine.cmd_query import SearchCommand, opt_help, opt_projection
from oxidize.errors import OxidizeError

opt_json = {"name": "json", "long": "json", "type": bool, "default": False,
            "help": "print {set: {search: {mrr@10, recall@5, recall@10, queries, p50_ms, p95_ms}}}"}


class Bench(SearchCommand):
    """Score a projection's search on query sets."""

    name = "bench"
    doc_purpose = "score a projection's search on query sets (patina's bench format)"
    doc_usage = "[-p RECIPE:PROJECTION] [--json] SET.json..."
    doc_description = ("Runs each query of each set through the raw embedding, the projection,\n"
                       "BM25, both hybrids and the search the build chose; prints MRR@10, Recall@5,\n"
                       "Recall@10 and warm latency.")
    cmd_options = (opt_projection, opt_json, opt_help)

    def _execute(self, pos_args=None, projection="", json=False):
        from oxidize.search.queryset import CONFIGS, load_query_set, score

        if not pos_args:
            raise InvalidCommand(f"oxidize: bench: give a query set, e.g. `{self._tool} bench "
                                 f"benchmarks/queries/my-questions.json`")
        try:
            sets = [load_query_set(path) for path in pos_args]
            search, warning = self.open_search(projection)
            self.warn([warning])
            results = {}
            for query_set in sets:
                results[query_set.name] = score(search, query_set, (*CONFIGS, ("auto", "auto", False)))
                results[query_set.name]["auto"]["search"] = search.fusion("auto").name
                if not json:
                    self._print(search.label, query_set, results[query_set.name])
            self.warn(search.notices)
        except OxidizeError as err:
            raise InvalidCommand(f"oxidize: {err}") from None
        if json:
            import json as json_module

            self.outstream.write(json_module.dumps(results, indent=2) + "\n")
        return 0

    def _print(self, label: str, query_set, result: dict) -> None:
        out = self.outstream
        out.write(f"{label}: {query_set.name} ({len(query_set.queries)} queries, {query_set.path})\n")
        out.write(f"  {'search':<18} {'MRR@10':>7} {'R@5':>6} {'R@10':>6} {'p50 ms':>7} {'p95 ms':>7}\n")
        for name, r in result.items():
            if name == "auto":
                name = f"auto: {r['search']}"
            out.write(f"  {name:<18} {r['mrr@10']:>7.3f} {r['recall@5']:>6.3f} {r['recall@10']:>6.3f} "
                      f"{r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f}\n")
