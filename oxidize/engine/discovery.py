"""Recipe discovery: which recipes a project has, loaded and validated.

Its own module because the task graph, the commands and the Python search API
(:func:`oxidize.search.open_search`) all find recipes the same way, and none of them should
import the task graph (and its actions) to do it.
"""

from __future__ import annotations

from pathlib import Path

from oxidize.engine.layout import RECIPE_CACHE, RECIPE_CACHE_ENTRIES, in_build
from oxidize.errors import RecipeError
from oxidize.recipe import Recipe, load_recipe


def find_recipe_files(root: Path) -> list[tuple[str, Path]]:
    """Every recipe of the project as ``(name, path)``, sorted by name.

    ``recipes/<name>/oxidize.yaml`` and ``recipes/<name>.yaml`` are recipes named ``<name>``;
    a patina checkout's ``.patina/oxidize.yaml`` is the recipe ``patina``. Two files claiming
    one name are an error rather than a silent choice.
    """
    found: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        if name in found:
            raise RecipeError(path, None, f"recipe name '{name}' is also used by {found[name]}; "
                                          "rename one of the two")
        found[name] = path

    recipes_dir = root / "recipes"
    if recipes_dir.is_dir():
        for entry in sorted(recipes_dir.iterdir()):
            if entry.is_dir() and (entry / "oxidize.yaml").is_file():
                add(entry.name, entry / "oxidize.yaml")
            elif entry.is_file() and entry.suffix in (".yaml", ".yml") and not entry.name.startswith("."):
                add(entry.stem, entry)
    patina = root / ".patina" / "oxidize.yaml"
    if patina.is_file():
        add("patina", patina)
    return sorted(found.items())


def load_recipes(root: Path) -> list[Recipe]:
    """Load and validate every recipe found under ``root``.

    Parsed YAML is kept in :data:`RECIPE_CACHE` (keyed by the sha256 of each file's text,
    see :data:`oxidize.recipe.yaml_text.PARSED`), so a no-op ``doit`` neither imports nor runs PyYAML;
    the recipes are still validated on every run.
    """
    import json

    from oxidize.recipe.yaml_text import PARSED

    cache = Path(root) / in_build(RECIPE_CACHE, root)
    try:
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if not isinstance(stored, dict):  # damaged: only a cache, start it afresh
            stored = {}
        PARSED.update((k, v) for k, v in stored.items() if isinstance(v, str))
    except (OSError, ValueError):
        stored = {}
    recipes = [load_recipe(path, name) for name, path in find_recipe_files(root)]
    if PARSED.keys() - stored.keys():
        try:
            from oxidize.util.atomic import write_text

            cache.parent.mkdir(parents=True, exist_ok=True)
            recent = dict(list(PARSED.items())[-RECIPE_CACHE_ENTRIES:])
            write_text(cache, json.dumps(recent))
        except OSError:
            pass  # only a cache: a read-only build folder parses the YAML every time
    return recipes
