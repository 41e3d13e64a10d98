"""Adding to a search index instead of rebuilding it.

A log grows by appending: a rebuilt index would insert every item into the HNSW graph again
(a million items: minutes), while the few new ones are what changed. When the index on disk
was written by this format from the same model (so every stored plain embedding is still
right), and the population differs from it by at most :data:`UPDATE_MAX_FRACTION` of its
items, :func:`update_index` changes only that difference:

* items no longer in the population, and items whose text changed (a file re-described),
  are removed from the graphs, from ``items`` and from the lexical index;
* new and changed items are added to them;
* the projected graph is updated the same way when the weights are the same; retrained
  weights move every projected vector, so the graph is built again;
* the vector rows (:mod:`oxidize.search.vector_rows`: the projected vectors and the plain
  embeddings as f16, no graph) are written again in full: a million rows take seconds, a
  tenth of the graph's insertions;
* the search expansion is calibrated again on the whole graph (oxidize/search/recall.py), so the
  recall it records is the updated graph's.

Each file is written to a temporary name and renamed, the table last, as a full write does:
a search during the update reads the old or the new index. Anything else (a different model
or weights, a damaged or older index, a large change) is a full :func:`~oxidize.search.index.write_index`.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from oxidize.search.population import Item

#: Above this share of the population changed (added + removed + re-texted), the index is
#: rebuilt: a graph that lost many nodes searches worse, and a rebuild costs little more.
UPDATE_MAX_FRACTION = 0.1
#: What must match between the index on disk and the one to write for an update …
SAME = ("format", "storage", "model_fingerprint", "base_dim", "pair_type")
#: … and, for the projected graph to be updated rather than built again.
SAME_PROJECTION = ("weights_sha256", "dim")


def update_index(out_dir: Path, items: list[Item], base: np.ndarray, projected: np.ndarray,
                 meta: dict[str, Any], weights_file: Path, why: list[str] | None = None,
                 ) -> dict[str, Any] | None:
    """Update the index in ``out_dir`` to ``items`` in place (see the module docstring);
    return what changed (``added``, ``removed``, ``changed``, ``count``, and whether the
    projected graph was ``rebuilt``), or ``None`` where it cannot be updated and must be
    written in full. ``meta`` is what :func:`~oxidize.search.index.write_index` would record.

    The files on disk are checked first (:func:`damage`): a file cut short, bytes flipped in
    the vectors or the table — the index is then written in full, and ``why`` receives the
    reason (the index step says it)."""
    import numpy as np

    from oxidize.search import index as ix
    from oxidize.search import vector_rows as vr

    table = out_dir / ix.TABLE_FILE
    if not all((out_dir / name).is_file() for name in (ix.TABLE_FILE, ix.INDEX_FILE, vr.BASE_FILE,
                                                       vr.PROJECTED_FILE, vr.KEYS_FILE)):
        return None
    wanted = {**meta, **ix.index_meta(items, base, projected)}
    try:
        old_meta, removed, changed, added = _difference(table, items, wanted)
    except (sqlite3.Error, ValueError) as exc:
        if why is not None and "no such table: lexical" not in str(exc):  # an older index is no damage
            why.append(f"{ix.TABLE_FILE} cannot be read ({str(exc).strip() or type(exc).__name__})")
        return None
    except _NotUpdatable:
        return None
    change = len(removed) + len(changed) + len(added)
    if change > UPDATE_MAX_FRACTION * max(len(items), 1):
        return None
    rebuild = any(old_meta.get(k) != wanted.get(k) for k in SAME_PROJECTION)
    drop, add = removed + changed, [*changed, *added]
    done = {"added": len(added), "removed": len(removed), "changed": len(changed),
            "count": len(items), "rebuilt": rebuild}
    broken = damage(out_dir, items, base, projected, old_meta, unchanged=not (drop or add), same_weights=not rebuild)
    if broken:
        if why is not None:
            why.append(broken)
        return None
    if not (drop or add or rebuild):
        return done  # the same items, model and weights: the index on disk is this one
    keys = np.fromiter((item.key for item in items), dtype=np.uint64, count=len(items))
    try:
        searched = _update_graph(out_dir, keys, projected, drop, add, old_meta, rebuild)
    except _NotUpdatable:
        return None
    vr.write(out_dir, keys, {vr.BASE_FILE: base, vr.PROJECTED_FILE: projected})
    _update_table(table, items, drop, add, {**wanted, "search": searched},
                  weights_file if rebuild else None)
    return done


def summary(done: dict[str, Any]) -> str:
    """The index step's words for an update (what :func:`update_index` returned)."""
    return (f"updated the index in place to {done['count']:,} items ({done['added']:,} added, "
            f"{done['removed']:,} removed, {done['changed']:,} re-texted"
            + ("; the projected graph built again for the new weights" if done["rebuilt"] else "") + ")")


class _NotUpdatable(Exception):
    pass


def damage(out_dir: Path, items: list[Item], base: np.ndarray, projected: np.ndarray, meta: dict,
           unchanged: bool, same_weights: bool = True) -> str | None:
    """What is wrong with the index files on disk, in words, or ``None``: the table's pages
    (SQLite's ``quick_check``), its lexical index (FTS5's ``integrity-check``) and the weights
    stored in it (their sha256, recorded when written), the graph (readable, as many vectors
    as items) and, when the items are ``unchanged`` (the rows are then kept, not written
    again), the vector rows byte for byte against what the items give: the plain embeddings
    always, the projected ones when the weights are the same too (``same_weights``)."""
    import hashlib

    import numpy as np

    from oxidize.search import index as ix
    from oxidize.search.lexical import FTS_TABLE
    from oxidize.search import vector_rows as vr
    from oxidize.search.usearch_import import usearch_index

    table = out_dir / ix.TABLE_FILE
    try:
        db = sqlite3.connect(table)  # FTS5's integrity-check writes nothing but needs a writable handle
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                return f"{ix.TABLE_FILE} is damaged ({check})"
            db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES('integrity-check')")
            row = db.execute("SELECT data FROM weights").fetchone()
            db.rollback()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"{ix.TABLE_FILE} is damaged ({str(exc).strip() or type(exc).__name__})"
    stored = meta.get(ix.STORED_WEIGHTS)
    if row is not None and stored is not None and hashlib.sha256(bytes(row[0])).hexdigest() != stored:
        return f"the weights stored in {ix.TABLE_FILE} are not the ones it was written with"
    try:
        graph = usearch_index().Index.restore(str(out_dir / ix.INDEX_FILE), view=True)
    except Exception as exc:  # noqa: BLE001 - usearch raises RuntimeError/ValueError on damage
        return f"{ix.INDEX_FILE} is not a readable graph ({str(exc).strip() or type(exc).__name__})"
    if graph is None or len(graph) != meta.get("count"):
        return f"{ix.INDEX_FILE} holds {0 if graph is None else len(graph):,} vectors, not {meta.get('count'):,}"
    if unchanged:
        keys = np.fromiter((item.key for item in items), dtype=np.uint64, count=len(items))
        return vr.differs(out_dir, keys, {vr.BASE_FILE: base, **({vr.PROJECTED_FILE: projected} if same_weights else {})})
    return None


def _difference(table: Path, items: list[Item], wanted: dict) -> tuple[dict, list[int], list[int], list[int]]:
    """The index's meta, and the keys removed from, re-texted in and added to the population."""
    db = sqlite3.connect(f"file:{table}?mode=ro", uri=True)
    try:
        old = {k: json.loads(v) for k, v in db.execute("SELECT name, value FROM meta")}
        if any(old.get(k) != wanted.get(k) for k in SAME):
            raise _NotUpdatable
        db.execute("SELECT 1 FROM lexical LIMIT 1")  # an index of an older oxidize: rebuild
        text_of = {item.key: item.text for item in items}
        removed, changed, old_keys = [], [], set()
        for key, text in db.execute("SELECT key, text FROM items"):
            old_keys.add(key)
            if key not in text_of:
                removed.append(key)
            elif text_of[key] != text:
                changed.append(key)
        if len(old_keys) != old.get("count"):
            raise _NotUpdatable
        added = [key for key in text_of if key not in old_keys]
        return old, removed, changed, added
    finally:
        db.close()


def _update_graph(out_dir: Path, keys: np.ndarray, projected: np.ndarray, drop: list[int],
                  add: list[int], old_meta: dict, rebuild: bool) -> dict[str, Any]:
    """Remove ``drop`` from and add ``add`` to the projected graph (built again when
    ``rebuild``), saved atomically; return the index's search settings."""
    import numpy as np

    from oxidize.search import index as ix
    from oxidize.util.atomic import atomic_path
    from oxidize.search.usearch_import import usearch_index

    vectors = np.ascontiguousarray(projected, dtype=np.float32)
    if rebuild:
        index = ix.new_index(vectors.shape[1])
        index.add(keys, vectors, threads=os.cpu_count() or 1)
    else:
        try:
            index = usearch_index().Index.restore(str(out_dir / ix.INDEX_FILE))
        except Exception:  # noqa: BLE001 - usearch raises RuntimeError/ValueError on damage
            raise _NotUpdatable from None
        if index is None or len(index) != old_meta.get("count"):
            raise _NotUpdatable
        index.expansion_add = ix.EXPANSION_ADD  # not kept in the file
        if drop:
            index.remove(np.asarray(drop, dtype=np.uint64))
        row = {int(key): i for i, key in enumerate(keys)}
        rows = np.array([row[key] for key in add], dtype=np.int64)
        if len(rows):
            index.add(keys[rows], vectors[rows], threads=os.cpu_count() or 1)
    searched = {**(old_meta.get("search") or {}), ix.INDEX_FILE: ix.search_settings(index, vectors, keys)}
    with atomic_path(out_dir / ix.INDEX_FILE) as tmp:
        index.save(str(tmp))
    return searched


def _update_table(table: Path, items: list[Item], drop: list[int], add: list[int], meta: dict,
                  weights_file: Path | None) -> None:
    """The item table and its lexical index, changed by ``drop`` and ``add`` (and the stored
    weights replaced by ``weights_file``'s bytes when given), in a copy renamed into place."""
    from oxidize.util.atomic import atomic_path
    from oxidize.search.index import INSERT_ITEM, item_row
    from oxidize.search.lexical import FTS_TABLE

    by_key = {item.key: item for item in items}
    with atomic_path(table) as tmp:
        shutil.copyfile(table, tmp)
        db = sqlite3.connect(tmp)
        try:
            for key in drop:  # an external-content FTS5 row is deleted with its old text
                db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) "
                           f"SELECT 'delete', key, text FROM items WHERE key = ?", (key,))
                db.execute("DELETE FROM items WHERE key = ?", (key,))
            for key in add:
                item = by_key[key]
                db.execute(INSERT_ITEM, item_row(item))
                db.execute(f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (?, ?)", (item.key, item.text))
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           ((k, json.dumps(v)) for k, v in meta.items()))
            if weights_file is not None:
                from oxidize.search.index import store_weights

                store_weights(db, Path(weights_file).read_bytes())
            db.commit()
        finally:
            db.close()
