"""A file's text from what it contains: its path, what it says about itself, what it defines.

A question whose words are not in a path cannot find a file described by its path alone
(``file src/retrieval/fusion.rs: retrieval fusion, rust source``). :func:`describe_content`
adds the file's own account of itself — the module docstring or the leading comment — and
each of its definitions with the first sentence of its doc (:mod:`oxidize.gitlog.definitions`:
classes with their methods' names, functions, structs, traits, …; a Markdown file's
headings), read with a real parser: Python's ``ast``; tree-sitter's maintained grammars for
Rust, JavaScript, TypeScript, Go, C and C++ (each a wheel that ships its compiled grammar).
A file no parser reads keeps its path text.

The budget, :data:`MAX_CHARS` = 2,000: the lexical index reads all of a text, the embedding
model its first 256 tokens (about 1,000 characters of code words), so the file's own account
comes first and its definitions in source order after it. Measured on three repositories'
question sets (docs/benchmarks.md, "File texts"), 2,000 characters did better than 700 and
1,000 and as well as 4,000; a Markdown file's headings as a list did better than each heading
with its first sentence (often a table row or "The key pieces are:").
"""

from __future__ import annotations

from oxidize.pairs.co_changed import describe_file

#: Longest text made for a file (see the module docstring; docs/benchmarks.md, "File texts").
MAX_CHARS = 2000

def describe_content(path: str, data: bytes, max_chars: int | None = None, defined: list | None = None) -> str:
    """``describe_file(path)``, then ``— <what the file says of itself>``, then each
    definition with the first sentence of its doc: ``class HelpFormatter: Formats help
    pages (methods: write, indent); function wrap_text: Wraps text.`` (a Markdown file: its
    first paragraph's first sentence and ``sections: <its headings>``), at most
    ``max_chars`` (:data:`MAX_CHARS`). ``defined``: the file's definitions when the caller has
    read them already (the scrape keeps them too), so the file is not parsed for them twice."""
    from oxidize.gitlog.definitions import definitions, module_doc

    head = describe_file(path)
    about = module_doc(path, data)
    parts = []
    defined = definitions(path, data) if defined is None else defined
    sections = [d.name for d in defined if d.kind == "section"]
    if sections:  # a document's headings, as a list: their first sentences measured worse
        parts.append("sections: " + ", ".join(sections))
    for d in defined:
        if d.kind in ("method", "section"):
            continue  # a method is named under its class
        public = [m for m in d.members if not m.startswith("_")]
        parts.append(f"{d.kind} {d.name}" + (f": {d.doc}" if d.doc else "")
                     + (f" (methods: {', '.join(public)})" if public else ""))
    if not about and not parts:
        return head
    out = head + (f" — {about}" if about else "") + ("; " if about and parts else " — " if parts else "") \
        + "; ".join(parts)
    limit = MAX_CHARS if max_chars is None else max_chars
    return out if len(out) <= limit else out[:limit - 1].rstrip() + "…"
