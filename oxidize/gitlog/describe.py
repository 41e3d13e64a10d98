"""A file's text from what it contains: its path, what it says about itself, what it defines.

A question whose words are not in a path cannot find a file described by its path alone
(``file src/retrieval/fusion.rs: retrieval fusion, rust source``). :func:`describe_content`
adds the file's own account of itself — the module docstring or the leading comment — and
its top-level names (functions, classes, structs, traits, headings), read with a real
parser: Python's ``ast``; tree-sitter's maintained grammars for Rust, JavaScript,
TypeScript, Go, C and C++ (each a wheel that ships its compiled grammar); the headings of
Markdown. Bounded to :data:`MAX_CHARS`; a file no parser reads keeps its path text.
"""

from __future__ import annotations

import ast
import functools
import re

from oxidize.pairs.co_changed import describe_file

#: Longest text made for a file (a sentence model reads ~256 tokens of it at most).
MAX_CHARS = 700
#: Most names listed.
MAX_NAMES = 40
_LANGUAGES = {".rs": "rust", ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript",
              ".cjs": "javascript", ".ts": "typescript", ".tsx": "tsx", ".go": "go",
              ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp",
              ".hh": "cpp", ".hxx": "cpp"}
#: Top-level node types whose name is listed, per grammar (a ``name`` or ``declarator`` field).
_DEFINITIONS = {"function_item", "struct_item", "enum_item", "trait_item", "type_item", "mod_item",
                "const_item", "static_item", "macro_definition", "union_item",
                "function_declaration", "class_declaration", "interface_declaration",
                "type_alias_declaration", "enum_declaration", "lexical_declaration",
                "method_declaration", "type_declaration", "function_definition",
                "struct_specifier", "class_specifier", "namespace_definition", "abstract_class_declaration"}
_CONTAINERS = {"export_statement", "impl_item", "declaration_list", "template_declaration"}
_COMMENT = re.compile(r"^\s*(?://[/!]?|#|/\*+|\*+/?|--)\s?")


def describe_content(path: str, data: bytes) -> str:
    """``describe_file(path)``, then ``— <what the file says of itself>; defines: a, b, …``."""
    head = describe_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    try:
        if suffix == ".py":
            about, names = _python(text)
        elif suffix in (".md", ".markdown"):
            about, names = _markdown(text)
        elif suffix in _LANGUAGES:
            about, names = _tree_sitter(_LANGUAGES[suffix], data)
        else:
            return head
    except (SyntaxError, ValueError, RecursionError, ImportError, OSError):
        return head
    parts = [head]
    if about:
        parts.append(" ".join(about.split()))
    if names:
        parts.append("defines: " + ", ".join(dict.fromkeys(names[:MAX_NAMES])))
    out = " — ".join(parts[:2]) + (f"; {parts[2]}" if len(parts) > 2 else "")
    return out if len(out) <= MAX_CHARS else out[:MAX_CHARS - 1].rstrip() + "…"


def _python(text: str) -> tuple[str, list[str]]:
    import warnings

    with warnings.catch_warnings():  # a file's own odd literals are not the build's business
        warnings.simplefilter("ignore")
        tree = ast.parse(text)
    names = [node.name for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    doc = ast.get_docstring(tree) or ""
    return doc.split("\n\n")[0], names


def _markdown(text: str) -> tuple[str, list[str]]:
    headings, first = [], ""
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            continue
        if fence:
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            headings.append(match.group(2))
        elif not first and line.strip() and not line.startswith(("---", "|", "<", "!")):
            first = line.strip()
    return first, headings


@functools.lru_cache(maxsize=None)
def _parser(language: str):
    from tree_sitter import Language, Parser

    if language == "rust":
        import tree_sitter_rust as grammar
        return Parser(Language(grammar.language()))
    if language == "javascript":
        import tree_sitter_javascript as grammar
        return Parser(Language(grammar.language()))
    if language in ("typescript", "tsx"):
        import tree_sitter_typescript as grammar
        return Parser(Language(grammar.language_tsx() if language == "tsx" else grammar.language_typescript()))
    if language == "go":
        import tree_sitter_go as grammar
        return Parser(Language(grammar.language()))
    if language == "c":
        import tree_sitter_c as grammar
        return Parser(Language(grammar.language()))
    import tree_sitter_cpp as grammar
    return Parser(Language(grammar.language()))


def _tree_sitter(language: str, data: bytes) -> tuple[str, list[str]]:
    root = _parser(language).parse(data).root_node
    comments: list[str] = []
    for node in root.children:  # the leading comment block: the file's account of itself
        if node.type not in ("comment", "line_comment", "block_comment"):
            break
        comments += [_COMMENT.sub("", line).removesuffix("*/").strip()
                     for line in node.text.decode("utf-8", "replace").splitlines()]
    names: list[str] = []
    _names(root, names, depth=0)
    return " ".join(c for c in comments if c), names


def _names(node, out: list[str], depth: int) -> None:
    for child in node.children:
        if child.type in _DEFINITIONS:
            name = _name_of(child)
            if name:
                out.append(name)
        if child.type in _CONTAINERS and depth < 3:
            _names(child.child_by_field_name("body") or child, out, depth + 1)


def _name_of(node) -> str:
    for field in ("name", "declarator"):
        target = node.child_by_field_name(field)
        while target is not None and target.child_by_field_name("declarator") is not None:
            target = target.child_by_field_name("declarator")
        if target is not None:
            return target.text.decode("utf-8", "replace").split("(")[0].strip()
    if node.type in ("lexical_declaration", "type_declaration"):
        for child in node.children:
            inner = child.child_by_field_name("name")
            if inner is not None:
                return inner.text.decode("utf-8", "replace")
    return ""
