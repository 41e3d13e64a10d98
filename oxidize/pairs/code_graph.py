"""The call graph of a log: functions by ``file::name``, and call edges resolved to them.

Read from code events (patina's shapes, or oxidize's simpler one), or — when the log has no
code events, as patina writes reference repositories — from the ``call_graph`` and
``function_facts`` tables. docs/patina.md lists every shape.

Identity: a function is ``<file>::<name>`` (patina's ``source_id`` of ``code.function``);
names are as written in the source, so ``new`` in eleven files is eleven functions. A call
``{caller, callee, file}`` is made by ``<file>::<caller>``; its callee resolves to the
function of that name **in the same file** first, else to the **unique** definition of that
name elsewhere, else it stays unresolved: the edge is dropped and counted, never merged
into some other file's function of that name. A call without ``file`` (oxidize's own shape,
qualified names such as ``commands::init::run``) names its functions directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CALL_EVENT = "code.call"
FUNCTION_EVENT = "code.function"


@dataclass
class Function:
    """One function: its name, file, text fields and the first event that named it."""

    name: str
    file: str | None = None
    signature: str | None = None
    doc: str | None = None
    call_text: str | None = None
    first: tuple[str, int] | None = None  # (timestamp, seq); None: undated (table rows)


@dataclass
class CallGraph:
    functions: dict[str, Function] = field(default_factory=dict)  # id → function, first seen first
    edges: set[tuple[str, str]] = field(default_factory=set)  # (id, id), unordered, a < b
    #: functions in order of first appearance in a call (caller, then callee)
    order: dict[str, None] = field(default_factory=dict)
    calls: int = 0
    resolved_elsewhere: int = 0
    unresolved: int = 0
    unresolved_examples: list[str] = field(default_factory=list)
    source: str = "code events"


def _str(data: dict, key: str) -> str | None:
    value = data.get(key)
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def signature_of(data: dict, name: str) -> str | None:
    """A signature line from patina's fields (``is_public``, ``is_async``, ``parameters``,
    ``return_type``), or oxidize's ``signature`` as written."""
    given = _str(data, "signature")
    if given:
        return given
    params = data.get("parameters")
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            params = [params]
    if not isinstance(params, list) and data.get("return_type") is None and "is_public" not in data:
        return None
    words = [w for w, on in (("pub", data.get("is_public")), ("async", data.get("is_async"))) if on]
    args = ", ".join(str(p) for p in params) if isinstance(params, list) else ""
    returns = _str(data, "return_type")
    return " ".join([*words, f"fn {name}({args})"]) + (f" -> {returns}" if returns else "")


def read_call_graph(log: Any) -> CallGraph:
    """The log's call graph (see the module docstring)."""
    graph = CallGraph()
    calls: list[tuple[dict, tuple[str, int] | None]] = []
    for event in log.events((CALL_EVENT, FUNCTION_EVENT)):
        when = (event.timestamp, event.seq)
        if event.event_type == FUNCTION_EVENT:
            _add_function(graph, event.data, when)
        else:
            calls.append((event.data, when))
    if not calls and hasattr(log, "table"):
        facts = log.table("function_facts")
        rows = log.table("call_graph")
        if rows:
            graph.source = "call_graph and function_facts tables"
            for row in facts or []:
                _add_function(graph, row, None)
            calls = [(row, None) for row in rows]
    by_name: dict[str, list[str]] = {}
    for fid, fn in graph.functions.items():
        by_name.setdefault(fn.name, []).append(fid)
    for data, when in calls:
        graph.calls += 1
        _add_call(graph, data, when, by_name)
    return graph


def _add_function(graph: CallGraph, data: dict, when) -> None:
    name = _str(data, "name")
    if name is None:
        return
    file = _str(data, "file")
    fid = f"{file}::{name}" if file else name
    if fid not in graph.functions:
        graph.functions[fid] = Function(name, file, signature_of(data, name), _str(data, "doc"),
                                        first=when)


def _node(graph: CallGraph, fid: str, name: str, file: str | None, when, text: str | None) -> str:
    fn = graph.functions.get(fid)
    if fn is None:
        fn = graph.functions[fid] = Function(name, file, first=when)
    if fn.first is None or (when is not None and when[1] < fn.first[1]):
        fn.first = when if fn.first is None else min(fn.first, when, key=lambda w: w[1])
    if text and fn.call_text is None:
        fn.call_text = text
    return fid


def _add_call(graph: CallGraph, data: dict, when, by_name: dict[str, list[str]]) -> None:
    caller, callee = _str(data, "caller"), _str(data, "callee")
    if caller is None or callee is None:
        return
    file = _str(data, "file")
    if file is None:  # oxidize's shape: qualified names are the functions
        if caller == callee:
            return
        a = _node(graph, caller, caller, None, when, _str(data, "caller_text"))
        b = _node(graph, callee, callee, None, when, _str(data, "callee_text"))
    else:
        a = _node(graph, f"{file}::{caller}", caller, file, when, None)
        target = f"{file}::{callee}"
        if target not in graph.functions:
            defined = by_name.get(callee, [])
            if len(defined) == 1:
                target = defined[0]
                graph.resolved_elsewhere += 1
            else:
                graph.unresolved += 1
                if len(graph.unresolved_examples) < 3:
                    graph.unresolved_examples.append(
                        f"{callee} (from {file}; {len(defined)} definitions)")
                return
        b = _node(graph, target, graph.functions[target].name, graph.functions[target].file, when, None)
    if a != b:
        graph.order.setdefault(a, None)
        graph.order.setdefault(b, None)
        graph.edges.add((a, b) if a < b else (b, a))
