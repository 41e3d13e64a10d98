"""Functions and the calls between them, read from a file's code with the same parsers as
its text (:mod:`oxidize.gitlog.describe`): ``ast`` for Python, tree-sitter's grammars for
Rust, JavaScript, TypeScript, Go, C and C++.

They become patina's code events (oxidize/pairs/code_graph.py reads them): ``code.function``
``{file, name, signature, doc}`` with ``source_id`` ``<file>::<name>``, and ``code.call``
``{caller, callee, file, line_number}`` with names as written (a method is its own name,
``obj.run()`` calls ``run``), so ``caller_callee`` works on any repository: the graph
resolves a callee in its own file first, then to a unique definition elsewhere.
"""

from __future__ import annotations

import ast
import warnings

from oxidize.gitlog.definitions import LANGUAGES, node_name, parser

#: tree-sitter node types of a function or method definition, and of a call.
_FUNCTIONS = {"function_item", "function_declaration", "method_declaration", "function_definition",
              "method_definition", "generator_function_declaration"}
_CALLS = {"call_expression", "macro_invocation"}
MAX_DOC = 200


def functions_and_calls(path: str, data: bytes) -> tuple[list[dict], list[dict]]:
    """``([{name, signature, doc, line}], [{caller, callee, line}])`` of one file; empty for a
    file no parser reads or that does not parse."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    try:
        if suffix == ".py":
            return _python(data.decode("utf-8", "replace"))
        if suffix in LANGUAGES:
            return _tree_sitter(LANGUAGES[suffix], data)
    except (SyntaxError, ValueError, RecursionError, ImportError):
        pass
    return [], []


def _python(text: str) -> tuple[list[dict], list[dict]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = ast.parse(text)
    functions, calls = [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = ", ".join(a.arg for a in node.args.args)
            doc = (ast.get_docstring(node) or "").split("\n\n")[0][:MAX_DOC]
            functions.append({"name": node.name, "signature": f"def {node.name}({args})",
                              "doc": doc, "line": node.lineno})
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call):
                    callee = (inner.func.id if isinstance(inner.func, ast.Name) else
                              inner.func.attr if isinstance(inner.func, ast.Attribute) else None)
                    if callee:
                        calls.append({"caller": node.name, "callee": callee, "line": inner.lineno})
    return functions, calls


def _tree_sitter(language: str, data: bytes) -> tuple[list[dict], list[dict]]:
    root = parser(language).parse(data).root_node
    functions, calls = [], []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type in _FUNCTIONS:
            name = node_name(node)
            if name:
                header = data[node.start_byte:node.end_byte].split(b"{", 1)[0]
                functions.append({"name": name, "line": node.start_point[0] + 1, "doc": "",
                                  "signature": " ".join(header.decode("utf-8", "replace").split())[:200]})
                calls += [{"caller": name, "callee": callee, "line": line}
                          for callee, line in _calls_in(node)]
                continue  # a nested function's calls are the outer one's too: counted above
        stack.extend(reversed(node.children))
    return functions, calls


def _calls_in(node) -> list[tuple[str, int]]:
    out, stack = [], list(node.children)
    while stack:
        child = stack.pop()
        if child.type in _CALLS:
            function = child.child_by_field_name("function") or child.child_by_field_name("macro")
            if function is not None:
                name = _last_identifier(function.text.decode("utf-8", "replace"))
                if name:
                    out.append((name, child.start_point[0] + 1))
        stack.extend(child.children)
    return out


def _last_identifier(text: str) -> str:
    """``self.store.open`` → ``open``; ``Store::new`` → ``new``; ``fmt.Println`` → ``Println``."""
    for sep in ("::", "->", "."):
        text = text.rsplit(sep, 1)[-1]
    text = text.split("<", 1)[0].strip()
    return text if text.replace("_", "a").isalnum() else ""
