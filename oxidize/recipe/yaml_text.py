"""Reading a recipe's YAML text: PyYAML's errors as one line, and a parse cache.

PyYAML costs ~10 ms to import and ~3 ms per small file to parse in pure Python, so a
no-op ``doit`` takes parsed recipes from :data:`PARSED` and imports PyYAML only for a
recipe text it has not seen. :mod:`oxidize.recipe` validates what this returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oxidize.errors import RecipeError


#: Parsed recipe texts: sha256 of the exact text → its ``yaml.safe_load`` result, for the
#: documents whose JSON round trip is exact. Keyed by content, so an entry can never be
#: stale; :func:`oxidize.engine.tasks.load_recipes` keeps it in ``build/.cache/recipes.json`` so
#: that a no-op ``doit`` neither imports nor runs PyYAML.
PARSED: dict[str, Any] = {}


def _parse_yaml(text: str, path: Path) -> Any:
    import hashlib
    import json

    key = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if key in PARSED:
        try:
            return json.loads(PARSED[key])
        except (TypeError, ValueError, RecursionError):  # a damaged cache entry: parse again
            del PARSED[key]
    import yaml

    try:
        size = _expanded_size(yaml.compose(text, Loader=yaml.SafeLoader))
        if size > MAX_VALUES:
            raise RecipeError(path, None, f"the recipe expands to {_count(size)} values through its "
                                          f"YAML aliases (*name), more than the {MAX_VALUES:,} a recipe "
                                          f"may hold; write the repeated parts out or use fewer aliases")
        data = yaml.safe_load(text)
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyYAML's constructors also leak ValueError etc.
        raise RecipeError(path, None, _yaml_message(exc, text)) from None
    try:
        dumped = json.dumps(data, allow_nan=False)
        if json.loads(dumped) == data:  # no dates, int keys… that JSON would change
            PARSED[key] = dumped
    except (TypeError, ValueError, RecursionError):
        pass
    return data


#: The most values (scalars, lists, mappings) a recipe may expand to. A real one has a few
#: dozen; nine aliases nested nine wide ("billion laughs") expand to 9**9 and would take
#: gigabytes when the parsed recipe is serialised for its cache.
MAX_VALUES = 100_000


def _expanded_size(node, memo: dict | None = None) -> int:
    """How many values ``node`` stands for once every alias is expanded (each shared node
    is counted once per use, but measured once: linear in the document's size)."""
    import yaml

    memo = {} if memo is None else memo
    if node is None:
        return 0
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_VALUES + 1  # a node that contains itself expands without end
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**12 else f"about 10^{len(str(n)) - 1}"


def _yaml_message(exc: Exception, text: str) -> str:
    """One line from PyYAML's multi-line error: where (1-based) and what went wrong.

    Parser errors carry a mark; reader errors (control characters) only an offset; and
    constructor bugs such as ``a: 2020-13-01`` raise a bare ``ValueError`` with neither.
    """
    import yaml

    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        return f"invalid YAML at line {line}, column {column}: character {exc.character!r} is not allowed"
    if isinstance(exc, RecursionError):
        return "invalid YAML: nested too deeply"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML value: {exc}"
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = f" ({exc.context})" if exc.context else ""
    return f"invalid YAML{where}: {exc.problem or 'malformed document'}{context}"
