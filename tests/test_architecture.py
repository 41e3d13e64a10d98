"""docs/architecture.md stays true: every module under oxidize/ has a row in its module
table (a package's ``__init__.py`` counts as the package), and every row names a module
that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_is_in_the_architecture_table():
    doc = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([^`]+)`", doc, flags=re.M))
    named = {row.rstrip("/") for row in rows if row.endswith((".py", "/"))}
    packages = {n for n in named if not n.endswith(".py")}  # a row for a whole package (`pairs/`)
    modules = {str(p.relative_to(ROOT / "oxidize")) for p in (ROOT / "oxidize").rglob("*.py")
               if "__pycache__" not in p.parts}
    missing = sorted(m for m in modules if not m.endswith("__init__.py") and m not in named
                     and m.split("/")[0] not in packages)
    assert missing == [], f"modules without a row in docs/architecture.md: {missing}"
    gone = sorted(n for n in named if n.endswith(".py") and n not in modules)
    assert gone == [], f"rows of docs/architecture.md naming no module: {gone}"
