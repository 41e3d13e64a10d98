"""``doit cache-key [RECIPE...]``: one sha256 over every input of a build, for CI caches.

CI restores ``build/`` (doit's state, the outputs, the embedding cache) from a cache keyed
by this value, so an unchanged project rebuilds nothing and a changed one starts from the
closest previous build (see docs/ci.md). The key covers, per recipe (all recipes, or the
ones named):

* the recipe's settings after defaults (:func:`oxidize.engine.lockfile.recipe_settings`: a
  comment or a default written out does not change the key);
* the sha256 of the event log file's content (what doit itself compares);
* the model fingerprint's inputs: sha256 of ``model.onnx`` and ``tokenizer.json`` and the
  pooling/prefix settings (:func:`oxidize.embed.models.fingerprint`);

and, once, the oxidize version and Python's ``major.minor`` (Numba's cache and pickles
differ between Python versions). Never hashed: paths, mtimes, the machine.

A plain doit command (``doit.COMMAND`` entry point ``cache-key``; also ``oxidize
cache-key``): it does not load the task graph or open doit's state, so it can run before
``build/`` is restored. Exit codes: 0 — the key is printed; 3 — a recipe is invalid or
named but not found, or an input cannot be read.
"""

from __future__ import annotations

import sys
from pathlib import Path

from doit.cmd_base import Command
from doit.exceptions import InvalidCommand

from oxidize.errors import OxidizeError

#: Bump when the meaning of the key changes, so old CI caches are not reused.
KEY_VERSION = 1


def cache_key_inputs(root: Path, names: list[str] | None = None) -> dict:
    """The JSON-able dict the key is the digest of (``--explain`` prints it)."""
    from oxidize import __version__
    from oxidize.engine import lockfile
    from oxidize.embed import models
    from oxidize.engine.fingerprint import file_sha256
    from oxidize.engine.discovery import load_recipes
    from oxidize.engine.tasks import _rel, eventlog_path

    recipes = load_recipes(root)
    known = {r.name for r in recipes}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise OxidizeError(f"no recipe named {', '.join(unknown)}; recipes found: "
                           f"{', '.join(sorted(known)) or 'none'} (in recipes/ and .patina/oxidize.yaml)")
    out: dict = {"key_version": KEY_VERSION, "oxidize": __version__,
                 "python": f"{sys.version_info.major}.{sys.version_info.minor}", "recipes": {}}
    for recipe in recipes:
        if names and recipe.name not in names:
            continue
        log = eventlog_path(recipe, root)
        from oxidize.recipe.checks import GitSource

        if isinstance(recipe.eventlog, GitSource):  # the history is named by its HEAD
            from oxidize.gitlog.scrape import head_state

            out["recipes"][recipe.name] = {
                "settings": lockfile.recipe_settings(recipe),
                "git_head": head_state(recipe.eventlog.repo),
                "model_fingerprint": models.fingerprint(recipe.resolve_model()),
            }
            continue
        if not log.is_file():  # a key without the log's content would match any log
            from oxidize.eventlog import check_eventlog_path

            try:
                check_eventlog_path(Path(_rel(log, root)))
            except OxidizeError as err:
                raise OxidizeError(f"recipe {recipe.name}: {err}") from None
        resolved = recipe.resolve_model()
        out["recipes"][recipe.name] = {
            "settings": lockfile.recipe_settings(recipe),
            "eventlog_sha256": file_sha256(log),
            "model_fingerprint": models.fingerprint(resolved),
        }
    return out


opt_explain = {"name": "explain", "long": "explain", "type": bool, "default": False,
               "help": "print the inputs the key is computed from (JSON), then the key"}


class CacheKey(Command):
    """Print one sha256 of every input of the named recipes (or all)."""

    name = "cache-key"
    doc_purpose = "print a sha256 of every build input (recipes, event logs, models) for CI caches"
    doc_usage = "[RECIPE ...]"
    doc_description = None
    cmd_options = (opt_explain,)

    def execute(self, params, args):
        import json

        from oxidize.engine.fingerprint import digest

        try:
            inputs = cache_key_inputs(Path.cwd(), list(args))
        except OxidizeError as err:
            raise InvalidCommand(f"oxidize: {err}") from None
        if params.get("explain"):
            print(json.dumps(inputs, indent=2, sort_keys=True, ensure_ascii=False))
        print(digest(inputs))
        return 0
