"""``caller_callee`` pairs: functions that call each other are similar.

Formula (what the triplets teach): for an anchor function ``a``, a positive ``p`` that
``a`` calls or that calls ``a``, and a negative ``n`` with no call edge to ``a`` in either
direction, the projection learns ``d(a, p) + margin < d(a, n)``. This is patina's
``dependency`` projection: code that calls each other belongs to one flow.

Events read (the contract for whatever writes code events into the log):

``code.call`` — one call edge; ``source_id`` and ``source_file`` are free::

    {"caller": "commands::init::run",          # required: a qualified name (string)
     "callee": "scaffold::create_dirs",        # required
     "caller_text": "fn run(args: &Args) …",   # optional: text to embed for the caller
     "callee_text": "fn create_dirs(root) …"}  # optional: text to embed for the callee

``code.function`` — optional, one per function, richer text::

    {"name": "commands::init::run",            # required: the name used in code.call
     "signature": "pub fn run(args: &Args) -> Result<()>",   # optional
     "doc": "Initialise a project …",         # optional (doc comment)
     "file": "src/commands/init.rs"}           # optional

A row missing a required field, or with a non-string one, is skipped; a call of a
function to itself is ignored. Repeated ``code.call`` rows for one pair are one edge
(``training.min_count`` is not used: a call is a fact, not a frequency).

Text of a function (:func:`describe_function`), the first that applies:
    1. its first ``code.function`` event: ``"function commands::init::run (commands init
       run)"``, then the signature, the doc and ``"in <file>"``, one per line;
    2. the ``caller_text``/``callee_text`` of the first ``code.call`` that carries one;
    3. the name line alone.
    Functions are texts in order of first appearance (``seq``) in ``code.call`` events;
    two functions that end with the same text become one node (the first one's).

Held-out split (:mod:`oxidize.pairs.split`):
    each function is its own group, dated by the first code event (``code.call`` or
    ``code.function``, lowest ``seq``) that names it: the functions that appeared latest
    are held out; queries are held-out functions, relevant = held-out functions they call
    or are called by.

A log without ``code.call`` events is an error that says so; ``training.event_types`` and
``min_chars`` are not used. Sampling: :mod:`oxidize.pairs.graph`.
"""

from __future__ import annotations

import re
from typing import Any

from oxidize.errors import EventLogError
from oxidize.pairs import PairSet

PAIR_TYPE = "caller_callee"
CALL_EVENT = "code.call"
FUNCTION_EVENT = "code.function"
_NAME_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_SHAPE = ('code.call events with data {"caller": "mod::fn", "callee": "mod::other"} '
          '(optionally "caller_text"/"callee_text", and code.function events with '
          '"name", "signature", "doc", "file"), patina\'s code.call {"caller", "callee", "file"} '
          'with code.function {"file", "name", …}, or patina\'s call_graph table; see docs/patina.md')


def _str(data: dict, key: str) -> str | None:
    value = data.get(key)
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def describe_function(name: str, signature: str | None = None, doc: str | None = None,
                      file: str | None = None) -> str:
    """``"function a::b_c (a b c)"`` plus signature, doc and file lines when known."""
    words = " ".join(w.lower() for chunk in _NAME_SPLIT.split(name) for w in _CAMEL.split(chunk) if w)
    lines = [f"function {name} ({words})" if words and words != name else f"function {name}"]
    lines += [line for line in (signature, doc, f"in {file}" if file else None) if line]
    return "\n".join(lines)


def function_text(fn) -> str:
    """The text embedded for a :class:`oxidize.pairs.code_graph.Function`."""
    if fn.signature or fn.doc or fn.file:
        return describe_function(fn.name, fn.signature, fn.doc, fn.file)
    return fn.call_text or describe_function(fn.name)


def generate(log: Any, training: Any, label: str = "") -> PairSet:
    """Build the ``caller_callee`` pair set of one projection (see the module docstring).

    Raises:
        EventLogError: the log has no calls (events or ``call_graph`` table), or none usable.
    """
    import numpy as np

    from oxidize.pairs.code_graph import read_call_graph
    from oxidize.pairs.graph import graph_pairset

    graph = read_call_graph(log)
    if graph.calls == 0:
        raise EventLogError(f"{log.path} has no {CALL_EVENT} events; caller_callee needs {_SHAPE}")
    if not graph.edges:
        why = (f" ({graph.unresolved:,} callees resolve to no single definition, e.g. "
               f"{', '.join(graph.unresolved_examples)})" if graph.unresolved else "")
        rows = f"{CALL_EVENT} events" if graph.source == "code events" else "call_graph rows"
        raise EventLogError(f"{log.path}: none of its {graph.calls:,} {rows} has string "
                            f"\"caller\" and \"callee\" fields naming two different functions{why}; "
                            f"caller_callee needs {_SHAPE}")
    # Functions that take part in a call, in first appearance; equal texts share a node.
    texts: dict[str, int] = {}
    node_of: dict[str, int] = {}
    first_events: list = []
    for fid in graph.order:
        fn = graph.functions[fid]
        node = texts.setdefault(function_text(fn), len(texts))
        if node == len(first_events):
            first_events.append(fn.first)
        elif fn.first is not None and (first_events[node] is None or fn.first[1] < first_events[node][1]):
            first_events[node] = fn.first
        node_of[fid] = node
    positive = np.array(sorted((node_of[a], node_of[b]) for a, b in graph.edges), dtype=np.int64).reshape(-1, 2)
    if graph.unresolved:
        print(f"{label + ': ' if label else ''}{PAIR_TYPE}: {graph.unresolved:,} of {graph.calls:,} calls "
              f"name a callee defined nowhere or in several other files (e.g. "
              f"{', '.join(graph.unresolved_examples)}): left out, not merged", flush=True)
    return graph_pairset(
        log, training, label, pair_type=PAIR_TYPE, noun="functions", texts=list(texts),
        positive=positive, related=positive, first_events=first_events,
        summary={"functions": len(texts), "call_edges": len(graph.edges), "calls": graph.calls,
                 "callees_resolved_elsewhere": graph.resolved_elsewhere,
                 "callees_unresolved": graph.unresolved, "source": graph.source},
        detail=f" ({len(graph.edges):,} call edges)")
