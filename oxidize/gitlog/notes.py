"""A repository's notes as sessions: each Markdown file of ``notes: GLOB`` one session.

Read as patina writes its session files (``layer/sessions/<id>.md``): ``# Session: title``,
``**ID**:`` and ``**Started**:`` lines, sections under headings (``## Goals``) or bold labels
(``**Key decisions**:``). Each list item or paragraph is one note; its event type comes from
the section it is in (:data:`SECTIONS`). A devlog or a folder of ADRs reads the same way:
the file name is the session id and the last commit that touched the file its date.
"""

from __future__ import annotations

import re

#: Words of a section's title → the note type of its items (first match wins; else work).
SECTIONS = (("goal", "session.goal"), ("context", "session.context"), ("decision", "session.decision"),
            ("pattern", "session.pattern"), ("challenge", "session.observation"),
            ("solution", "session.observation"), ("observ", "session.observation"),
            ("lesson", "session.observation"))
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LABEL = re.compile(r"^\*\*([^*]+)\*\*\s*:?\s*(.*)$")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(?:\[[ xX]\]\s+)?(.*)$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}")
_META = ("id", "started", "llm", "branch", "commit", "status", "date", "author")


def section_type(title: str) -> str:
    low = title.lower()
    return next((kind for word, kind in SECTIONS if word in low), "session.work")


def session_events(path: str, text: str, date: str) -> list[tuple[str, str, str, str, dict]]:
    """``[(event_type, timestamp, session id, path, data)]`` of one notes file: a
    ``session.started`` with its title, then one event per note."""
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    session, started, title = stem, date, stem
    kind = "session.work"
    notes: list[tuple[str, str]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            notes.append((kind, " ".join(paragraph)))
            paragraph.clear()

    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            flush()
            continue
        if fence:
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            if len(heading.group(1)) == 1 and title == stem:
                title = re.sub(r"^session:\s*", "", heading.group(2), flags=re.I) or stem
            else:
                kind = section_type(heading.group(2))
            continue
        label = _LABEL.match(line.strip())
        if label:
            flush()
            name, rest = label.group(1).strip().rstrip(":").strip(), label.group(2).strip()
            if name.lower() in _META:
                if name.lower() == "id" and rest:
                    session = rest
                elif name.lower() in ("started", "date") and _ISO.match(rest):
                    started = rest  # else (e.g. "July 27, 2025") the file's commit date stays
                continue
            kind = section_type(name)
            if rest:
                notes.append((kind, rest))
            continue
        item = _ITEM.match(line)
        if item:
            flush()
            if item.group(1).strip():
                notes.append((kind, item.group(1).strip()))
        elif line.strip():
            paragraph.append(line.strip())
        else:
            flush()
    flush()
    events = [("session.started", started, session, path, {"title": title, "branch": None})]
    events += [(k, started, session, path, {"content": content, "section": k.split(".")[1]})
               for k, content in notes if len(content) > 1]
    return events
