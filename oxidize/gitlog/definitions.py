"""What a file defines: its classes, functions, methods, types and sections, each with the
first sentence of what its author wrote about it.

People ask about code at the granularity of its definitions ("how many empty lines go
before a class" is answered by one class's docstring, not by a file name). Each
:class:`Definition` is read with a real parser — Python's ``ast``; tree-sitter's maintained
grammars for Rust, JavaScript, TypeScript, Go, C and C++ (doc comments: the comment block
right above a definition); Markdown headings with their first sentence — and becomes

* a sentence of its file's text (:func:`oxidize.gitlog.describe.describe_content`),
* a code event in patina's schema where the log is scraped (``code.class``,
  ``code.struct``, ``code.enum``, ``code.trait``, ``code.interface``, ``code.type``,
  ``code.function``; ``source_id`` ``<file>::<name>``),
* an item of the file population's search (:mod:`oxidize.search.population`): a hit on it
  credits its file.
"""

from __future__ import annotations

import ast
import functools
import re
import warnings
from dataclasses import dataclass, field

#: Longest first sentence kept of a docstring or doc comment.
MAX_DOC = 200
#: Longest signature kept.
MAX_SIGNATURE = 160
#: Most definitions read from one file (a generated file can hold thousands).
MAX_DEFINITIONS = 400

#: The tree-sitter grammar of each file name ending.
LANGUAGES = {".rs": "rust", ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript",
              ".cjs": "javascript", ".ts": "typescript", ".tsx": "tsx", ".go": "go",
              ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp",
              ".hh": "cpp", ".hxx": "cpp"}

#: patina's event type of each kind (a method is a function of its class).
EVENT_TYPES = {"class": "code.class", "struct": "code.struct", "enum": "code.enum", "trait": "code.trait",
               "interface": "code.interface", "type": "code.type", "function": "code.function",
               "method": "code.function"}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[])|\n\s*\n")
_COMMENT = re.compile(r"^\s*(?://[/!]?|#|/\*+|\*+/?|--)\s?")


@dataclass(frozen=True)
class Definition:
    """One thing a file defines. ``name`` is qualified by its class or type for a method
    (``LineTracker.visit``); ``doc`` is the first sentence of its docstring or doc comment."""

    name: str
    kind: str
    signature: str
    doc: str
    line: int
    members: tuple[str, ...] = field(default=())

    @property
    def event_type(self) -> str | None:
        return EVENT_TYPES.get(self.kind)

    def text(self, path: str) -> str:
        """Its search item's text: what it is, where, and what its author says of it."""
        head = f"{self.signature or self.kind + ' ' + self.name} — {self.kind} in {path}"
        parts = [head]
        if self.doc:
            parts.append(self.doc)
        if self.members:
            parts.append("methods: " + ", ".join(self.members[:30]))
        return ": ".join(parts[:2]) + ("; " + parts[2] if len(parts) > 2 else "")


def first_sentence(text: str) -> str:
    """The first sentence (or first paragraph's first line of prose) of a docstring."""
    text = text.strip()
    if not text:
        return ""
    first = _SENTENCE_END.split(text, maxsplit=1)[0]
    first = " ".join(first.split())
    return first if len(first) <= MAX_DOC else first[:MAX_DOC - 1].rstrip() + "…"


def definitions(path: str, data: bytes) -> list[Definition]:
    """The definitions of one file, in source order; ``[]`` for a file no parser reads or
    that does not parse."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    try:
        if suffix == ".py":
            found = _python(data.decode("utf-8", "replace"))
        elif suffix in (".md", ".markdown"):
            found = _markdown(data.decode("utf-8", "replace"))
        elif suffix in LANGUAGES:
            found = _tree_sitter(LANGUAGES[suffix], data)
        else:
            return []
    except (SyntaxError, ValueError, RecursionError, ImportError, OSError):
        return []
    return found[:MAX_DEFINITIONS]


def module_doc(path: str, data: bytes) -> str:
    """What a file says of itself first: the module docstring's first paragraph, or the
    leading comment block (tree-sitter languages), or a Markdown file's first paragraph."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    try:
        if suffix == ".py":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                doc = ast.get_docstring(ast.parse(data.decode("utf-8", "replace"))) or ""
            return " ".join(doc.split("\n\n")[0].split())
        if suffix in (".md", ".markdown"):  # its first paragraph, under the title or not
            for _heading, first in _markdown_blocks(data.decode("utf-8", "replace")):
                if first:
                    return first_sentence(first)
            return ""
        if suffix in LANGUAGES:
            root = _parse(LANGUAGES[suffix], data)
            comments: list[str] = []
            end = None
            for node in root.children:  # the first block of comments, no blank line inside
                if node.type not in _COMMENTS or (end is not None and node.start_point[0] > end + 1):
                    break
                comments.append(_comment_text(node))
                end = node.end_point[0]
            return " ".join("\n".join(comments).strip().split("\n\n")[0].split())  # its first paragraph
    except (SyntaxError, ValueError, RecursionError, ImportError, OSError):
        pass
    return ""


# ------------------------------------------------------------------ Python

def _signature(node: ast.AST) -> str:
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in node.bases)
        text = f"class {node.name}({bases})" if bases else f"class {node.name}"
    else:
        args = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
        args += [f"*{node.args.vararg.arg}"] if node.args.vararg else []
        args += [a.arg for a in node.args.kwonlyargs]
        prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        text = f"{prefix} {node.name}({', '.join(args)})"
    return text if len(text) <= MAX_SIGNATURE else text[:MAX_SIGNATURE - 1] + "…"


def _python(text: str) -> list[Definition]:
    with warnings.catch_warnings():  # a file's own odd literals are not the build's business
        warnings.simplefilter("ignore")
        tree = ast.parse(text)
    out: list[Definition] = []
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = [n for n in node.body if isinstance(n, functions)]
            out.append(Definition(node.name, "class", _signature(node), first_sentence(ast.get_docstring(node) or ""),
                                  node.lineno, tuple(m.name for m in methods)))
            out += [Definition(f"{node.name}.{m.name}", "method", _signature(m),
                               first_sentence(ast.get_docstring(m) or ""), m.lineno) for m in methods]
        elif isinstance(node, functions):
            out.append(Definition(node.name, "function", _signature(node),
                                  first_sentence(ast.get_docstring(node) or ""), node.lineno))
    return out


# ------------------------------------------------------------------ Markdown

def _markdown_blocks(text: str):
    """``(heading or "", first paragraph line)`` per section, outside code fences."""
    heading, first, fence = "", "", False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            continue
        if fence:
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            yield heading, first
            heading, first = match.group(2), ""
        elif not first and line.strip() and not line.startswith(("---", "|", "<", "!", "[")):
            first = line.strip()
    yield heading, first


def _markdown(text: str) -> list[Definition]:
    return [Definition(heading, "section", "", first_sentence(first), 0)
            for heading, first in _markdown_blocks(text) if heading]


# ------------------------------------------------------------------ tree-sitter languages

#: node type → kind, per grammar family (a node not listed defines nothing here).
_KINDS = {"struct_item": "struct", "enum_item": "enum", "trait_item": "trait", "type_item": "type",
          "union_item": "struct", "function_item": "function", "function_declaration": "function",
          "generator_function_declaration": "function", "class_declaration": "class",
          "abstract_class_declaration": "class", "interface_declaration": "interface",
          "type_alias_declaration": "type", "enum_declaration": "enum", "method_declaration": "method",
          "function_definition": "function", "struct_specifier": "struct", "class_specifier": "class",
          "enum_specifier": "enum", "type_spec": "type"}
_CONTAINERS = {"export_statement", "declaration_list", "template_declaration", "namespace_definition",
               "type_declaration", "linkage_specification"}
_METHODS = {"function_item", "method_definition", "function_definition", "method_signature",
            "abstract_method_signature"}
_COMMENTS = {"comment", "line_comment", "block_comment"}
_ATTRIBUTES = {"attribute_item", "inner_attribute_item", "decorator"}


def _parse(language: str, data: bytes):
    return parser(language).parse(data).root_node


@functools.lru_cache(maxsize=None)
def parser(language: str):
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


def _comment_text(node) -> str:
    """A comment's words, its lines joined by newlines (an empty comment line stays: it ends a
    paragraph)."""
    lines = node.text.decode("utf-8", "replace").splitlines()
    return "\n".join(_COMMENT.sub("", line).removesuffix("*/").strip() for line in lines).strip("\n")


def _doc_above(node) -> str:
    """The comment block right above ``node`` (no blank line between; attributes and
    decorators such as ``#[derive(…)]`` may stand between): its doc comment."""
    parts: list[str] = []
    line = node.start_point[0]
    sibling = node.prev_sibling
    while sibling is not None and sibling.end_point[0] >= line - 1 and (
            sibling.type in _COMMENTS or sibling.type in _ATTRIBUTES) \
            and not sibling.text.startswith((b"//!", b"/*!")):  # an inner doc is its module's
        if sibling.type in _COMMENTS:
            parts.insert(0, _comment_text(sibling))
        line = sibling.start_point[0]
        sibling = sibling.prev_sibling
    return first_sentence("\n".join(parts))


def node_name(node) -> str:
    """The name a definition node declares (its ``name`` field, or the innermost
    ``declarator`` of a C one), its last identifier (``Store::new`` → ``new``, a template's
    ``<…>`` dropped); ``""`` when it has none."""
    target = node.child_by_field_name("name") or node.child_by_field_name("declarator")
    while target is not None and target.child_by_field_name("declarator") is not None:
        target = target.child_by_field_name("declarator")
    if target is None:
        return ""
    text = target.text.decode("utf-8", "replace").split("(")[0].strip()
    for sep in ("::", "->", "."):
        text = text.rsplit(sep, 1)[-1]
    text = text.split("<", 1)[0].strip()
    return text if text.replace("_", "a").replace("~", "a").isalnum() else ""


def _header(node, data: bytes) -> str:
    header = data[node.start_byte:node.end_byte].split(b"{", 1)[0].split(b"\n\n", 1)[0]
    text = " ".join(header.decode("utf-8", "replace").split())
    return text if len(text) <= MAX_SIGNATURE else text[:MAX_SIGNATURE - 1] + "…"


def _tree_sitter(language: str, data: bytes) -> list[Definition]:
    root = _parse(language, data)
    out: list[Definition] = []
    members: dict[str, list[str]] = {}
    _walk(root, data, out, members, depth=0)
    # A Rust impl block or a Go method gives its methods to its type.
    return [Definition(d.name, d.kind, d.signature, d.doc, d.line, tuple(members.get(d.name, ())))
            if d.kind in ("struct", "enum", "class", "trait", "type") and d.name in members else d for d in out]


def _walk(node, data: bytes, out: list[Definition], members: dict[str, list[str]], depth: int) -> None:
    for child in node.children:
        kind = _KINDS.get(child.type)
        if child.type == "impl_item":  # impl Type { fn … }: methods of Type
            owner = child.child_by_field_name("type")
            owner_name = owner.text.decode("utf-8", "replace").split("<")[0].strip() if owner is not None else ""
            body = child.child_by_field_name("body")
            for item in (body.children if body is not None else ()):
                if item.type in _METHODS and owner_name:
                    _method(item, owner_name, data, out, members)
            continue
        if kind == "struct" and child.child_by_field_name("body") is None and child.type.endswith("_specifier"):
            continue  # `struct foo x;`: a use, not a definition
        if kind is not None:
            name = node_name(child)
            if name:
                if child.type == "type_spec":
                    shape = child.child_by_field_name("type")
                    kind = {"struct_type": "struct", "interface_type": "interface"}.get(
                        shape.type if shape is not None else "", "type")
                if child.type == "method_declaration":  # Go: func (r *Recv) Name(…)
                    receiver = child.child_by_field_name("receiver")
                    owner = re.sub(r"[^A-Za-z0-9_ ]", " ", receiver.text.decode("utf-8", "replace")).split() \
                        if receiver is not None else []
                    if owner:
                        members.setdefault(owner[-1], []).append(name)
                        name = f"{owner[-1]}.{name}"
                host = child.parent if child.parent is not None and child.parent.type in (
                    "export_statement", "type_declaration") else child
                out.append(Definition(name, kind, _header(child, data), _doc_above(host), child.start_point[0] + 1))
                if kind == "class":
                    body = child.child_by_field_name("body")
                    for item in (body.children if body is not None else ()):
                        if item.type in _METHODS:
                            _method(item, name, data, out, members)
        if child.type in _CONTAINERS and depth < 3:
            _walk(child.child_by_field_name("body") or child, data, out, members, depth + 1)


def _method(node, owner: str, data: bytes, out: list[Definition], members: dict[str, list[str]]) -> None:
    name = node_name(node)
    if name:
        members.setdefault(owner, []).append(name)
        out.append(Definition(f"{owner}.{name}", "method", _header(node, data), _doc_above(node),
                              node.start_point[0] + 1))
