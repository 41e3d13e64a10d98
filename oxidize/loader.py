"""Public entry for a project's ``dodo.py``: ``from oxidize.loader import DOIT_CONFIG, task_oxidize``.

The loader itself lives in :mod:`oxidize.engine.loader`; this path is kept because the
README and users' dodo files name it.
"""

from oxidize.engine.loader import DOIT_CONFIG, OxidizeLoader, task_oxidize

__all__ = ["DOIT_CONFIG", "OxidizeLoader", "task_oxidize"]
