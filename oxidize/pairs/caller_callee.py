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
          '"name", "signature", "doc", "file"); see oxidize/pairs/caller_callee.py')


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


def generate(log: Any, training: Any, label: str = "") -> PairSet:
    """Build the ``caller_callee`` pair set of one projection (see the module docstring).

    Raises:
        EventLogError: the log has no ``code.call`` events, or none usable.
    """
    import numpy as np

    from oxidize.pairs.graph import graph_pairset

    order: dict[str, None] = {}            # functions in first appearance in calls
    first_seen: dict[str, tuple[str, int]] = {}
    call_text: dict[str, str] = {}
    function_info: dict[str, tuple[str | None, str | None, str | None]] = {}
    edges: set[tuple[str, str]] = set()
    n_calls = 0
    for event in log.events((CALL_EVENT, FUNCTION_EVENT)):
        data = event.data
        if event.event_type == FUNCTION_EVENT:
            name = _str(data, "name")
            if name is not None:
                first_seen.setdefault(name, (event.timestamp, event.seq))
                function_info.setdefault(name, (_str(data, "signature"), _str(data, "doc"), _str(data, "file")))
            continue
        n_calls += 1
        caller, callee = _str(data, "caller"), _str(data, "callee")
        if caller is None or callee is None or caller == callee:
            continue
        for name, key in ((caller, "caller_text"), (callee, "callee_text")):
            order.setdefault(name, None)
            first_seen.setdefault(name, (event.timestamp, event.seq))
            text = _str(data, key)
            if text is not None:
                call_text.setdefault(name, text)
        edges.add((caller, callee) if caller < callee else (callee, caller))
    if n_calls == 0:
        raise EventLogError(f"{log.path} has no {CALL_EVENT} events; caller_callee needs {_SHAPE}")
    if not edges:
        raise EventLogError(f"{log.path}: none of its {n_calls:,} {CALL_EVENT} events has string "
                            f"\"caller\" and \"callee\" fields naming two different functions; "
                            f"caller_callee needs {_SHAPE}")

    # Function → node (text id); identical texts share a node, dated by its first function.
    texts: dict[str, int] = {}
    node_of: dict[str, int] = {}
    first_events: list[tuple[str, int]] = []
    for name in order:
        if name in function_info:
            text = describe_function(name, *function_info[name])
        else:
            text = call_text.get(name) or describe_function(name)
        node = texts.setdefault(text, len(texts))
        if node == len(first_events):
            first_events.append(first_seen[name])
        else:
            first_events[node] = min(first_events[node], first_seen[name], key=lambda fe: fe[1])
        node_of[name] = node
    positive = np.array(sorted((node_of[a], node_of[b]) for a, b in edges), dtype=np.int64).reshape(-1, 2)
    return graph_pairset(
        log, training, label, pair_type=PAIR_TYPE, noun="functions", texts=list(texts),
        positive=positive, related=positive, first_events=first_events,
        summary={"functions": len(texts), "call_edges": len(edges)},
        detail=f" ({len(edges):,} call edges)")
