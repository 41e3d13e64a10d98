"""``doit query``: search a projection's index with a text, from the command line.

A doit command plugin (``doit.COMMAND`` entry point ``query``; also ``oxidize query``):

    doit query [-p RECIPE:PROJECTION] [-k 10] [--mode auto|hybrid|dense|lexical|NAME] [--base]
               [--compare] [--json] TEXT…

By default (``--mode auto``) the text is searched the way the build chose for this index on
the project's history questions (oxidize/search/choice.py): its words by BM25 over the items
(oxidize/search/lexical.py) and its meaning — embedded with the model's *query* prefix (E5:
``query: ``), as it is and projected with the projection's weights — the lists merged as the
chosen fusion says (oxidize/search/fusion.py). ``--mode hybrid`` is lexical fused with the
projection's list, ``dense`` / ``lexical`` one list alone, and any name of the fusion menu
(``0.5lexical+0.5raw``, …) that search; ``--base`` puts the plain embedding of the same
population (``base.npy``, searched exactly) in the projection's place; ``--compare`` shows
the projection's search beside the plain embedding's (dense), and what each found that the
other did not. ``--json`` names the search in each hit (``search``). A stale index
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
#: The most results a query shows.
MAX_K = 10_000

opt_projection = {"name": "projection", "short": "p", "long": "projection", "type": str, "default": "",
                  "help": "RECIPE:PROJECTION to search (default: the only projection of the project)"}
opt_k = {"name": "k", "short": "k", "long": "top", "type": int, "default": DEFAULT_K,
         "help": f"how many results (default {DEFAULT_K})"}
opt_base = {"name": "base", "long": "base", "type": bool, "default": False,
            "help": "search the plain embedding of the same items instead of the projection"}
opt_compare = {"name": "compare", "long": "compare", "type": bool, "default": False,
               "help": "show the projection's and the plain embedding's rankings side by side"}
opt_mode = {"name": "mode", "long": "mode", "type": str, "default": "auto",
            "help": "how to search: auto (default: what the build chose on the project's history "
                    "questions), hybrid (lexical fused with the projection), dense, lexical, or a "
                    "name of the fusion menu such as 0.5lexical+0.5raw"}
opt_help = {"name": "help", "long": "help", "type": bool, "default": False,
            "help": "print this help and exit"}
opt_json = {"name": "json", "long": "json", "type": bool, "default": False,
            "help": "print a JSON list of {rank, score, event_type, date, source_id, seq, key, snippet,"
                    " dense_rank, lexical_rank} (with --compare: {projection: [...], base: [...]})"}


class SearchCommand(DoitCmdBase):
    """What ``doit query`` and ``doit bench`` share: the options doit's loader must not take,
    choosing the projection, opening its search, and the stale-index warning."""

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

    def parse_execute(self, in_args):
        """Options anywhere among the arguments (``bench SET.json -p R:P``, ``query "why" -k 3``),
        as people type them: doit's own parser stops at the first argument that is not one.
        ``--`` still ends the options (a query that starts with ``-``)."""
        import getopt

        parser = self.cmdparser
        try:
            opts, args = getopt.gnu_getopt(list(in_args), parser.get_short(), parser.get_long())
        except getopt.GetoptError:
            return super().parse_execute(in_args)  # doit's own message names the bad option
        ordered: list[str] = []
        for opt, value in opts:
            this, _inverse = parser.get_option(opt)
            ordered += [opt] if this.type is bool else ([f"{opt}={value}"] if opt.startswith("--") else [opt, value])
        return super().parse_execute([*ordered, "--", *args])

    def execute(self, params, args):
        """``--help`` prints the command's help (``doit help query``) before any project is
        read: doit's own commands have no ``--help``, and users type it first."""
        if params.get("help"):
            print(self.help())
            return 0
        return super().execute(params, args)

    def open_search(self, projection: str):
        """``(ProjectionSearch, stale warning or "")`` of ``RECIPE:PROJECTION`` (or the only
        projection); an OxidizeError says what is missing."""
        from oxidize.engine.layout import Layout, build_dir
        from oxidize.engine.discovery import load_recipes

        root = Path.cwd()
        recipe, proj = _choose(load_recipes(root), projection)
        out = Layout(recipe.name, proj.name, build_dir(root))
        warning = self._stale_warning(f"{recipe.name}:{proj.name}.index")
        if not (root / out.index_table).is_file():
            raise OxidizeError(f"{recipe.name}:{proj.name} has no search index yet; build it "
                               f"with `{self._tool} {recipe.name}:{proj.name}`")
        from oxidize.search import ProjectionSearch

        return ProjectionSearch(recipe, proj.name, root / out.dir), warning

    @staticmethod
    def warn(lines) -> None:
        for line in lines:
            if line:
                print(f"oxidize: warning: {line}", file=sys.stderr, flush=True)

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


class Query(SearchCommand):
    """Search a projection's index."""

    name = "query"
    doc_purpose = "search a projection's index with a text"
    doc_usage = "[-p RECIPE:PROJECTION] [-k N] [--mode auto|hybrid|dense|lexical|NAME] [--base | --compare] [--json] TEXT..."
    doc_description = ("Searches the projection's index (built by `doit`) for TEXT: by its words (BM25)\n"
                       "and by meaning (the embedding, plain and projected), fused as the build chose;\n"
                       "prints the best items.")
    cmd_options = (opt_projection, opt_k, opt_mode, opt_base, opt_compare, opt_json, opt_help)

    def _execute(self, pos_args=None, projection="", k=DEFAULT_K, mode="auto", base=False,
                 compare=False, json=False):
        text = from_terminal(" ".join(pos_args or [])).strip()
        if not text:
            raise InvalidCommand("oxidize: query: give the text to search for, e.g. "
                                 f"`{self._tool} query \"why is the cache slow\"`")
        if not 1 <= k <= MAX_K:
            raise InvalidCommand(f"oxidize: query: -k must be from 1 to {MAX_K:,}, got {k}")
        if base and compare:
            raise InvalidCommand("oxidize: query: --base and --compare exclude each other")
        try:
            search, warning = self.open_search(projection)
            results, used = {}, {}
            if compare:  # what the projection's search finds against the plain embedding's
                left = mode if search.fusion(mode).projected else "hybrid"  # one that reads it
                results["projection"] = search.query(text, k, mode=left)
                results["base"] = search.query(text, k, base=True, mode="dense")
                used = {"projection": search.fusion(left).name, "base": search.fusion("dense", True).name}
            else:
                name = "base" if base else "projection"
                results[name] = search.query(text, k, base=base, mode=mode)
                used = {name: search.fusion(mode, base).name}
        except OxidizeError as err:
            raise InvalidCommand(f"oxidize: {err}") from None
        from oxidize.search.lexical import query_terms

        nothing = any(name == "lexical" for name in used.values()) and not query_terms(text)
        self.warn([warning, *search.notices,
                   "the query has no word lexical search can use (only common words or single letters); "
                   "nothing found: try --mode dense" if nothing else ""])
        self._print(results, json, compare, text, used)
        return 0

    def _print(self, results: dict, as_json: bool, compare: bool, text: str, used: dict) -> None:
        from oxidize.search.index import hit_dict

        out = self.outstream
        if as_json:
            data = {name: [{**hit_dict(h), "search": used[name]} for h in hits] for name, hits in results.items()}
            out.write(json.dumps(data if compare else next(iter(data.values())), indent=2,
                                 ensure_ascii=False) + "\n")
            return
        if not compare:
            marked = _marker(out, text)
            for hit in next(iter(results.values())):
                out.write(f"{hit.rank:>3}  {hit.score:.3f}  {_line(hit.event_type):<18} {_line(hit.date):<10}  "
                          f"{_short(hit.source_id, 24):<24}  {marked(_line(hit.snippet))}\n")
            return
        proj, base = results["projection"], results["base"]
        proj_keys, base_keys = {h.key for h in proj}, {h.key for h in base}
        name = "projection" if used["projection"] == "dense" else f"projection, {used['projection']}"
        out.write(f"  {name} (+ = not in base)".ljust(44) + " | base, dense (- = not on the left)\n")
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
        out.write(f"the {name} search brought {gained} item{'s' if gained != 1 else ''} into the top "
                  f"{len(proj)} that the plain embedding did not find, and dropped {lost} of its\n")


def from_terminal(text: str) -> str:
    """A command-line text as the user typed it: bytes that are not UTF-8 (a Latin-1
    terminal's ``café``) reach Python as lone surrogates; they are read as Windows-1252, the
    superset of Latin-1 terminals send, rather than failing in the tokenizer."""
    import os

    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a surrogate no byte made: the tokenizer's own fallback
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


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


def _marker(out, text: str):
    """Bold the query's words in snippets when printing to a terminal (not with NO_COLOR)."""
    import os

    from oxidize.search.snippets import mark

    if os.environ.get("NO_COLOR") or not getattr(out, "isatty", lambda: False)():
        return lambda snippet: snippet
    return lambda snippet: mark(snippet, text)


def _line(text: str) -> str:
    """``text`` on one line of the table: control characters (a newline in a file name) shown
    escaped, as Python writes them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _short(text: str, width: int) -> str:
    text = _line(text)
    return text if len(text) <= width else text[:width - 1] + "…"
