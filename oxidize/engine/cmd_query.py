"""``doit query``: search a projection's index with a text, from the command line.

A doit command plugin (``doit.COMMAND`` entry point ``query``; also ``oxidize query``):

    doit query [-p RECIPE:PROJECTION] [-k 10] [--base] [--compare] [--json] TEXT…

The text is embedded with the model's *query* prefix (E5: ``query: ``), projected with the
projection's weights, and searched in ``index.usearch``; ``--base`` searches the plain
embedding of the same population (``base.usearch``), ``--compare`` shows both. A stale index
is still searched, after one warning line saying why it is stale (the reasons of
``doit stale``). This module imports nothing heavy: onnxruntime and usearch load in
:mod:`oxidize.search` when a query runs.

Exit codes: 0 — results printed (possibly none); 3 — the query could not run (no such
projection, no index yet, a damaged index, an empty query), with one line saying why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from doit.cmd_base import DoitCmdBase
from doit.exceptions import InvalidCommand

from oxidize.errors import OxidizeError

DEFAULT_K = 10

opt_projection = {"name": "projection", "short": "p", "long": "projection", "type": str, "default": "",
                  "help": "RECIPE:PROJECTION to search (default: the only projection of the project)"}
opt_k = {"name": "k", "short": "k", "long": "top", "type": int, "default": DEFAULT_K,
         "help": f"how many results (default {DEFAULT_K})"}
opt_base = {"name": "base", "long": "base", "type": bool, "default": False,
            "help": "search the plain embedding of the same items instead of the projection"}
opt_compare = {"name": "compare", "long": "compare", "type": bool, "default": False,
               "help": "show the projection's and the plain embedding's rankings side by side"}
opt_json = {"name": "json", "long": "json", "type": bool, "default": False,
            "help": "print a JSON list of {rank, score, event_type, date, source_id, seq, key, snippet}"
                    " (with --compare: {projection: [...], base: [...]})"}


class Query(DoitCmdBase):
    """Search a projection's index."""

    name = "query"
    doc_purpose = "search a projection's index with a text"
    doc_usage = "[-p RECIPE:PROJECTION] [-k N] [--base | --compare] [--json] TEXT..."
    doc_description = ("Embeds TEXT with the model's query prefix, projects it and prints the\n"
                       "nearest items of the projection's search index (built by `doit`).")
    cmd_options = (opt_projection, opt_k, opt_base, opt_compare, opt_json)

    def get_options(self):
        """doit's options, except a loader's own ``-k`` (``--seek-file`` of dodo.py projects),
        which would take ``-k N`` from the query; its long form still works."""
        from doit.cmdparse import CmdOption

        mine = {opt.get("short") for opt in self.cmd_options}
        loader = [dict(opt, short="") if opt.get("short") in mine else opt
                  for opt in self.loader.cmd_options]
        from oxidize.engine.loader import with_oxidize_defaults

        return [CmdOption(opt) for opt in with_oxidize_defaults(
            (*self.base_options, *loader, *self.cmd_options))]

    def _execute(self, pos_args=None, projection="", k=DEFAULT_K, base=False, compare=False, json=False):
        text = " ".join(pos_args or []).strip()
        if not text:
            raise InvalidCommand("oxidize: query: give the text to search for, e.g. "
                                 f"`{self._tool} query \"why is the cache slow\"`")
        if k < 1:
            raise InvalidCommand(f"oxidize: query: -k must be at least 1, got {k}")
        if base and compare:
            raise InvalidCommand("oxidize: query: --base and --compare exclude each other")
        from oxidize.engine.layout import Layout, build_dir
        from oxidize.engine.tasks import load_recipes

        root = Path.cwd()
        try:
            recipe, proj = _choose(load_recipes(root), projection)
            out = Layout(recipe.name, proj.name, build_dir(root))
            warning = self._stale_warning(f"{recipe.name}:{proj.name}.index")
            if not (root / out.index_table).is_file():
                raise OxidizeError(f"{recipe.name}:{proj.name} has no search index yet; build it "
                                   f"with `{self._tool} {recipe.name}:{proj.name}`")
            from oxidize.search import ProjectionSearch

            search = ProjectionSearch(recipe, proj.name, root / out.dir)
            results = {}
            if not base:
                results["projection"] = search.query(text, k)
            if base or compare:
                results["base"] = search.query(text, k, base=True)
        except OxidizeError as err:
            raise InvalidCommand(f"oxidize: {err}") from None
        if warning:
            print(f"oxidize: warning: {warning}", file=sys.stderr, flush=True)
        self._print(results, json, compare)
        return 0

    @property
    def _tool(self) -> str:
        """The command the user typed (``doit``, ``oxidize``); ``python -m doit`` says ``-m``."""
        return self.bin_name if self.bin_name and not self.bin_name.startswith("-") else "doit"

    def _stale_warning(self, task_name: str) -> str:
        """One line saying why the index is stale, or ``""``."""
        from oxidize.engine import staleness

        tasks = {t.name: t for t in self.task_list}
        if task_name not in tasks:
            return ""
        reasons = staleness.StaleChecker(self.dep_manager, tasks, Path.cwd()).check(task_name, explain=True)
        if not reasons:
            return ""
        return (f"the index of {task_name[:-len('.index')]} is stale ({staleness.render(reasons[0])}); "
                f"searching it as it is — `{self._tool}` rebuilds it")

    def _print(self, results: dict, as_json: bool, compare: bool) -> None:
        from oxidize.index import hit_dict

        out = self.outstream
        if as_json:
            data = {name: [hit_dict(h) for h in hits] for name, hits in results.items()}
            out.write(json.dumps(data if compare else next(iter(data.values())), indent=2,
                                 ensure_ascii=False) + "\n")
            return
        if not compare:
            for hit in next(iter(results.values())):
                out.write(f"{hit.rank:>3}  {hit.score:.3f}  {hit.event_type:<18} {hit.date:<10}  "
                          f"{_short(hit.source_id, 24):<24}  {hit.snippet}\n")
            return
        proj, base = results["projection"], results["base"]
        proj_keys, base_keys = {h.key for h in proj}, {h.key for h in base}
        out.write("  projection (+ = not in the base top k)     | base (- = not in the projection's top k)\n")
        for i in range(max(len(proj), len(base))):
            left = right = ""
            if i < len(proj):
                h = proj[i]
                left = f"{'+' if h.key not in base_keys else ' '}{h.rank:>2} {h.score:.3f} {_short(h.snippet, 34)}"
            if i < len(base):
                h = base[i]
                right = f"{'-' if h.key not in proj_keys else ' '}{h.rank:>2} {h.score:.3f} {_short(h.snippet, 34)}"
            out.write(f"{left:<44} | {right}\n")
        gained, lost = len(proj_keys - base_keys), len(base_keys - proj_keys)
        out.write(f"the projection brought {gained} item{'s' if gained != 1 else ''} into the top "
                  f"{len(proj)} and dropped {lost} of the base's\n")


def _choose(recipes, wanted: str):
    """The (recipe, projection) named ``RECIPE:PROJECTION``, or the only one there is."""
    everything = [(r, p) for r in recipes for p in r.projections.values()]
    names = [f"{r.name}:{p.name}" for r, p in everything]
    if wanted:
        for (r, p), name in zip(everything, names):
            if name == wanted or (":" not in wanted and len(r.projections) == 1 and r.name == wanted):
                return r, p
        raise OxidizeError(f"query: no projection {wanted!r}; the projections are: {', '.join(names)}")
    if len(everything) == 1:
        return everything[0]
    raise OxidizeError(f"query: this project has {len(names)} projections; choose one with -p: "
                       f"{', '.join(names)}")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
