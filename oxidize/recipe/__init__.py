"""Recipes: what to build, read from ``oxidize.yaml`` into frozen dataclasses, or one clear
error naming the file, the key path and what was expected.

* :mod:`.schema` — the dataclasses (:class:`Recipe`, :class:`Projection`,
  :class:`TrainingConfig` …), the key tables every level is checked against, and
  :func:`load_recipe`;
* :mod:`.yaml_text` — YAML text to data: PyYAML's errors as one line, the parse cache that
  spares a no-op ``doit`` PyYAML, the alias-expansion cap;
* :mod:`.checks` — the machinery the key tables are written in (a table row, where a value
  sits, typed checks whose errors name the key path) and the event-log source
  (a path or ``{git: PATH}``).

Imported whenever doit lists tasks: the standard library and PyYAML only.
"""

from oxidize.recipe.checks import GitSource
from oxidize.recipe.schema import (DEFAULT_EVENT_TYPES, DEFAULT_INDEX_EVENT_TYPES, DEFAULT_MODEL,
                                   PAIR_TYPES, EvalConfig, IndexConfig, Projection, Recipe,
                                   TrainingConfig, load_recipe, parse_recipe)

__all__ = ["DEFAULT_EVENT_TYPES", "DEFAULT_INDEX_EVENT_TYPES", "DEFAULT_MODEL", "PAIR_TYPES",
           "EvalConfig", "GitSource", "IndexConfig", "Projection", "Recipe", "TrainingConfig",
           "load_recipe", "parse_recipe"]
