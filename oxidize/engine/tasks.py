"""The doit task graph (recipes are found in :mod:`oxidize.engine.discovery`).

This module is imported every time doit loads or lists tasks, so it stays light: it reads
YAML and builds task dictionaries, and imports nothing numerical. The actions it names live
in :mod:`oxidize.engine.stages` and import numpy, onnxruntime and numba only when they run.

The graph (see docs/architecture.md for the why):

    R:model ──────────────┐
    R:P.pairs ──► R:P.embed ──► R:P.train ──► R:P.eval     (R:P: group of train, eval, index)
        │                           └───────► R:P.index (the search index of P's population)
        │                                          └──► R:P.eval, when P has query sets (eval.queries)
        │                           └─ + eval ► R:P.export (patina checkouts: patina's own files)
        └─────────── (every output of R) ──────────► R:lock (oxidize.lock beside the recipe)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from oxidize.errors import BuildError, OxidizeError, RecipeError
from oxidize.engine.fingerprint import StageInputs
from oxidize.engine.layout import (CACHE_FILE, PATINA_NAMES, RECIPE_FILES, Layout, _rel, build_dir,
                                   eventlog_path, in_build, patina_projections_dir)
from oxidize.engine.discovery import load_recipes
from oxidize.search.index import INDEX_FORMAT
from oxidize.recipe import Recipe


#: Tasks of a recipe itself (``R:model``, ``R:lock``, ``R:eventlog``, ``R:files``): names no
#: projection may take.
RECIPE_TASKS = frozenset({"model", "lock", "eventlog", "files"})


def task_dicts(root: Path | str = ".", check_inputs: bool | set[str] | None = None) -> Iterator[dict]:
    """Yield doit task dictionaries for every recipe and projection under ``root``.

    With ``check_inputs`` (``True``, or the set of recipe names a command will build), an
    event log that is missing or a directory is reported now, before any task runs;
    listing and ``stale`` pass nothing and still work without one.
    """
    from oxidize.embed import models  # light: the registry imports no numerical library
    from oxidize.engine import search_stages, stages  # light at import; heavy libraries load in the actions

    root = Path(root)
    base, cache_file = build_dir(root), in_build(CACHE_FILE, root)
    recipes = load_recipes(root)
    if not recipes:
        raise BuildError(f"no oxidize recipe found in {os.path.abspath(root)}: expected "
                         "recipes/<name>/oxidize.yaml, recipes/<name>.yaml or .patina/oxidize.yaml "
                         "(see README.md, 'Recipes')")
    for recipe in recipes:
        name = recipe.name
        recipe_file = _rel(recipe.path, root)
        # The recipe's group task (`doit R`), with a doc of its own for `doit list`.
        yield {"basename": name, "name": None,
               "doc": f"build recipe {name} ({recipe_file}): {', '.join(recipe.projections)}"}
        try:
            resolved = recipe.resolve_model()
            model_deps = [_rel(resolved.model_file, root), _rel(resolved.tokenizer_file, root)]
            model_dim = resolved.spec.dim
        except OxidizeError:
            # Listing must work without the model; building says what is missing.
            model_deps, model_dim = [], None
        for proj in recipe.projections.values():
            if proj.name in RECIPE_TASKS:  # R:<projection> would be the recipe's own task
                raise RecipeError(recipe.path, f"projections.{proj.name}",
                                  f"projection name '{proj.name}' is taken by the recipe's task "
                                  f"{name}:{proj.name}; choose another name")
            if proj.name in RECIPE_FILES:  # build/R/<projection>/ would collide with build/R/<file>
                raise RecipeError(recipe.path, f"projections.{proj.name}",
                                  f"projection name '{proj.name}' is the name of a file oxidize writes "
                                  f"in build/{name}/; choose another name")
            if proj.layers[0] is not None and model_dim is not None and proj.layers[0] != model_dim:
                raise RecipeError(recipe.path, f"projections.{proj.name}.layers",
                                  f"layers[0] is {proj.layers[0]} but model '{recipe.embedding_model}' "
                                  f"gives {model_dim}-dimensional embeddings; set it to {model_dim} "
                                  "or null (take it from the model)")
        model_json = str(Layout(name, "", base).model_json)
        yield {
            "basename": name,
            "name": "model",
            "doc": f"fingerprint of embedding model '{recipe.embedding_model}'",
            "actions": [(stages.build_model_fingerprint, (recipe_file, name, model_json))],
            "file_dep": model_deps,
            "targets": [model_json],
            "uptodate": [StageInputs(recipe.model_settings(), [model_json]) if model_deps else False],
            "verbosity": 2,
        }
        log = eventlog_path(recipe, root)
        scraped = _git_eventlog_task(recipe, root)
        if scraped is not None:
            yield scraped
        described = _described_files_task(recipe, root)
        if described is not None:
            yield described
        # A scraped log is the target of R:eventlog: a dependency before it exists.
        log_exists = log.is_file() or scraped is not None
        from oxidize.platform import platform_key

        platform = platform_key()
        if not log_exists and (check_inputs is True
                               or (isinstance(check_inputs, set) and name in check_inputs)):
            from oxidize.eventlog import check_eventlog_path

            try:
                check_eventlog_path(Path(_rel(log, root)))
            except OxidizeError as err:
                raise BuildError(f"recipe {name} ({recipe_file}): {err}") from None
        for proj in recipe.projections.values():
            out = Layout(name, proj.name, base)
            label = f"{name}:{proj.name}"
            pairs_targets = [str(out.texts), str(out.triplets), str(out.heldout), str(out.validation),
                             str(out.groups), str(out.related), str(out.history), str(out.pairs_json)]
            embed_targets = [str(out.embeddings), str(out.embed_json)]
            train_targets = [str(out.weights), str(out.training_json), str(out.onnx)]
            yield {
                "basename": name,
                "name": f"{proj.name}.pairs",
                "doc": f"training pairs ({proj.training.pair_type}) from {_rel(log, root)}",
                "actions": [(stages.build_pairs, (recipe_file, name, proj.name, _rel(log, root), str(out.dir)))],
                "file_dep": ([_rel(log, root)] if log_exists else []) + _files_dep(described, proj),
                "targets": pairs_targets,
                "uptodate": [StageInputs(recipe.pair_settings(proj.name), pairs_targets,
                                         inputs=[_rel(log, root)]) if log_exists else False],
                "verbosity": 2,
            }
            yield {
                "basename": name,
                "name": f"{proj.name}.embed",
                "doc": f"embeddings of {label}'s texts with {recipe.embedding_model}",
                "actions": [(stages.build_embeddings, (recipe_file, name, proj.name, str(out.dir),
                                                       model_json, cache_file))],
                "file_dep": [str(out.texts), model_json],
                "targets": embed_targets,
                # The platform key (the CPU arithmetic, oxidize/platform.py) decides the bits.
                "uptodate": [StageInputs({**recipe.model_settings(), "platform": platform}, embed_targets)],
                "verbosity": 2,
            }
            yield {
                "basename": name,
                "name": f"{proj.name}.train",
                "doc": f"train {label}: layers {list(proj.layers)}, {proj.epochs} epochs",
                "actions": [(stages.build_weights, (recipe_file, name, proj.name, str(out.dir)))],
                "file_dep": [str(out.embeddings), str(out.triplets), str(out.validation),
                             str(out.heldout), str(out.groups), str(out.related)],
                "targets": train_targets,
                "uptodate": [StageInputs(recipe.train_settings(proj.name), train_targets)],
                "verbosity": 2,
            }
            eval_targets = [str(out.metrics), str(out.training_png)]
            index_targets = [str(out.index), str(out.base_vectors), str(out.projected_vectors),
                             str(out.vector_keys), str(out.index_table)]
            # Eval reports the search the index step chose on the history questions, and scores
            # the query sets on the index: it follows the index.
            query_sets = [_rel(recipe.path.parent / q, root) for q in proj.eval.queries]
            yield {
                "basename": name,
                "name": f"{proj.name}.eval",
                "doc": f"score {label} against the base embedding and random on held-out data"
                       + (f" and {len(query_sets)} query set(s)" if query_sets else "")
                       + (f" (gate: {proj.gate})" if proj.gate else ""),
                "actions": [(search_stages.build_eval, (recipe_file, name, proj.name, str(out.dir)))],
                "file_dep": [str(out.embeddings), str(out.heldout), str(out.weights),
                             str(out.training_json)]
                            + [*index_targets, *(q for q in query_sets if os.path.isfile(root / q))],
                "targets": eval_targets,
                "uptodate": [StageInputs(recipe.projection(proj.name).eval_settings(), eval_targets)],
                "verbosity": 2,
            }
            yield {
                "basename": name,
                "name": f"{proj.name}.index",
                "doc": f"search index of {label}: every {proj.training.pair_type} item of the log, "
                       f"projected (`doit query -p {label}`)",
                "actions": [(search_stages.build_index, (recipe_file, name, proj.name, _rel(log, root),
                                                  str(out.dir), model_json, cache_file))],
                "file_dep": ([_rel(log, root)] if log_exists else []) + [model_json, str(out.weights),
                                                                        str(out.history)]
                            + _files_dep(described, proj),
                "targets": index_targets,
                "uptodate": [StageInputs({**recipe.projection(proj.name).index_settings(),
                                          "index_format": INDEX_FORMAT}, index_targets)
                             if log_exists else False],
                "verbosity": 2,
            }
            parts = [f"{label}.train", f"{label}.eval", f"{label}.index"]
            export = _patina_export_task(recipe, proj.name, root, out, log, model_json, cache_file)
            if export is not None:
                yield export
                parts.append(f"{label}.export")
            yield {
                "basename": name,
                "name": proj.name,
                "doc": f"build projection {label} (pairs, embeddings, weights, eval, index"
                       + (", patina export)" if export is not None else ")"),
                "actions": None,
                "task_dep": parts,
            }
        # R:lock: oxidize.lock beside the recipe, from every output (see oxidize/engine/lockfile.py).
        from oxidize.engine import lockfile

        lock_file = _rel(lockfile.lock_path(recipe.path), root)
        lock_deps = [model_json] + ([_rel(log, root)] if log_exists else [])
        for proj in recipe.projections.values():
            out = Layout(name, proj.name, base)
            lock_deps += [str(out.pairs_json), str(out.triplets), str(out.embeddings), str(out.index_table),
                          str(out.weights), str(out.training_json), str(out.metrics)]
        yield {
            "basename": name,
            "name": "lock",
            "doc": f"write {lock_file} (compare with it when ${lockfile.LOCKED_ENV} is set)",
            "actions": [(lockfile.build_lock, (recipe_file, name, lock_file))],
            "file_dep": lock_deps,
            "targets": [lock_file],
            "uptodate": [StageInputs(lockfile.recipe_settings(recipe), [lock_file]),
                         lockfile.LockedModeCheck()],
            "verbosity": 2,
        }


def _git_eventlog_task(recipe: Recipe, root: Path) -> dict | None:
    """``R:eventlog`` for a recipe whose ``eventlog`` is ``{git: PATH}``: the repository's
    history scraped into ``build/R/eventlog.sqlite`` (oxidize/gitlog/scrape.py), re-run when
    HEAD moves (the history, not the work tree's mtimes), else ``None``."""
    from oxidize.engine import stages
    from oxidize.gitlog.scrape import head_state
    from oxidize.recipe.checks import GitSource

    if not isinstance(recipe.eventlog, GitSource):
        return None
    target = str(Layout(recipe.name, "", build_dir(root)).scraped_eventlog)
    repo = _rel(recipe.eventlog.repo, root)
    return {
        "basename": recipe.name,
        "name": "eventlog",
        "doc": f"scrape the git history of {repo} into {target}",
        "actions": [(stages.build_git_eventlog, (_rel(recipe.path, root), recipe.name, target))],
        "targets": [target],
        "uptodate": [StageInputs({"git.repository": repo, "git.HEAD": head_state(recipe.eventlog.repo),
                                  "git.notes": recipe.eventlog.notes}, [target])],
        "verbosity": 2,
    }


def _described_files_task(recipe: Recipe, root: Path) -> dict | None:
    """``R:files`` for a patina checkout with a ``co_changed`` projection: the files at the
    repository's HEAD described from their content (``build/R/file_texts.sqlite``, used by
    the file population's pairs and index instead of path texts), re-run when HEAD moves."""
    from oxidize.engine import stages
    from oxidize.engine.layout import files_repository
    from oxidize.gitlog.scrape import head_state

    repo = files_repository(recipe)
    if repo is None:
        return None
    target = str(Layout(recipe.name, "", build_dir(root)).described_files)
    return {
        "basename": recipe.name,
        "name": "files",
        "doc": f"describe the files at HEAD of {_rel(repo, root) or '.'} from their content into {target}",
        "actions": [(stages.build_described_files, (_rel(recipe.path, root), recipe.name, target))],
        "targets": [target],
        "uptodate": [StageInputs({"git.repository": _rel(repo, root), "git.HEAD": head_state(repo)}, [target])],
        "verbosity": 2,
    }


def _files_dep(described: dict | None, proj) -> list[str]:
    """The described files as a dependency of a ``co_changed`` projection's steps."""
    return list(described["targets"]) if described and proj.training.pair_type in ("co_changed", "commit_files") \
        else []


def _patina_export_task(recipe: Recipe, projection: str, root: Path, out: Layout, log: Path,
                        model_json: str, cache_file: str) -> dict | None:
    """``patina:P.export`` for the projections patina's scry searches (semantic, temporal,
    dependency) of a patina checkout's recipe; ``None`` for any other projection."""
    from oxidize.engine import stages
    from oxidize.engine.fingerprint import RecordedFiles

    if recipe.path.parent.name != ".patina" or projection not in PATINA_NAMES:
        return None
    export_dir = patina_projections_dir(recipe.embedding_model)
    log_exists = log.is_file()
    record = str(out.export_json)
    settings = {**recipe.model_settings(), "export": f"patina-{projection}-v1"}
    return {
        "basename": recipe.name,
        "name": f"{projection}.export",
        "doc": f"{recipe.name}:{projection} into patina's {export_dir}/{projection}.safetensors and "
               f".usearch (the projection only when it beats the raw embedding)",
        "actions": [(stages.build_patina_export, (_rel(recipe.path, root), recipe.name, projection,
                                                  _rel(log, root), str(out.dir), model_json,
                                                  cache_file, export_dir))],
        "file_dep": ([_rel(log, root)] if log_exists else []) + [model_json, str(out.weights),
                                                                 str(out.metrics)],
        "targets": [record],
        "uptodate": [StageInputs(settings, [record]) if log_exists else False, RecordedFiles(record)],
        "verbosity": 2,
    }
