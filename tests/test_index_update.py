"""An index that grows by a few items is updated in place (oxidize/search/update.py): the
same search results as an index written afresh, the lexical index changed with it, and a
full write wherever an update would not be the same index."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from oxidize.search import index as ix, vector_rows
from oxidize.search.recall import RECALL_TARGET
from oxidize.search.update import update_index
from oxidize.search.population import Item
from test_index_recall import clustered

META = {"model_fingerprint": "m1", "weights_sha256": "w1", "pair_type": "same_session"}


def items_of(n: int, start: int = 0, word: str = "note") -> list[Item]:
    return [Item(i + 1, i + 1, "session.decision", f"s{i // 5}", "2025-01-01", f"{word} {i} about topic{i % 7}")
            for i in range(start, start + n)]


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"first weights")
    return path


def written(out: Path, items, base, projected, weights, meta=META) -> Path:
    out.mkdir(exist_ok=True)
    ix.write_index(out, items, base, projected, meta, weights_file=weights)
    return out


def meta_of(out: Path) -> dict:
    db = sqlite3.connect(out / ix.TABLE_FILE)
    try:
        return {k: json.loads(v) for k, v in db.execute("SELECT name, value FROM meta")}
    finally:
        db.close()


def test_appended_items_are_added_and_search_as_a_fresh_index(tmp_path: Path, weights: Path, monkeypatch):
    monkeypatch.setattr(ix, "EXACT_MAX", 100)  # graphs, calibrated, even at this size
    n, extra = 1000, 40
    base, projected = clustered(n + extra, 24, 1), clustered(n + extra, 16, 2)
    items = items_of(n + extra)
    out = written(tmp_path / "ix", items[:n], base[:n], projected[:n], weights)
    mtime = (out / ix.INDEX_FILE).stat().st_mtime_ns
    done = update_index(out, items, base, projected, META, weights)
    assert done == {"added": extra, "removed": 0, "changed": 0, "count": n + extra, "rebuilt": False}
    assert (out / ix.INDEX_FILE).stat().st_mtime_ns != mtime
    meta = meta_of(out)
    assert meta["count"] == n + extra and meta["search"][ix.INDEX_FILE]["recall@10"] >= RECALL_TARGET
    fresh = written(tmp_path / "fresh", items, base, projected, weights)
    updated, rebuilt = ix.Searcher(out), ix.Searcher(fresh)
    for q in clustered(30, 16, 9):
        assert [k for k, _ in updated.nearest(q, 10, exact=True)] == [k for k, _ in rebuilt.nearest(q, 10, exact=True)]
    # each new item is found by its own vector in the graph, and by a word of its text
    hits = sum(updated.nearest(projected[i], 1, exact=False)[0][0] == items[i].key for i in range(n, n + extra))
    assert hits >= extra - 1
    assert updated.lexical(f"note {n + 3}", 1)[0][0] == items[n + 3].key
    assert updated.lexical("topic3", 1000) and sorted(k for k, _ in updated.lexical("topic3", 1000)) == \
        sorted(k for k, _ in rebuilt.lexical("topic3", 1000))


def test_removed_and_retexted_items_leave_the_graph_and_the_lexical_index(tmp_path: Path, weights: Path):
    n = 300
    base, projected = clustered(n, 24, 3), clustered(n, 16, 4)
    items = items_of(n)
    out = written(tmp_path / "ix", items, base, projected, weights)
    kept = items[5:]  # five gone
    kept[0] = Item(kept[0].key, kept[0].seq, kept[0].event_type, kept[0].source_id, kept[0].timestamp,
                   "zebra crossing rewritten")  # one re-texted (same key)
    done = update_index(out, kept, base[5:], projected[5:], META, weights)
    assert (done["added"], done["removed"], done["changed"]) == (0, 5, 1)
    searcher = ix.Searcher(out)
    assert len(searcher) == n - 5
    assert all(k not in {i.key for i in items[:5]} for k, _ in searcher.nearest(projected[0], 50))
    assert searcher.lexical("zebra", 5)[0][0] == kept[0].key
    db = sqlite3.connect(out / ix.TABLE_FILE)
    db.execute("INSERT INTO lexical(lexical) VALUES('integrity-check')")  # raises if out of step
    indexed = sorted(k for (k,) in db.execute("SELECT rowid FROM lexical WHERE lexical MATCH '\"note\"'"))
    assert indexed == sorted(i.key for i in kept[1:])  # not the removed ones, not the old text


def test_new_weights_rebuild_only_the_projected_graph(tmp_path: Path, weights: Path):
    n = 300
    base, projected = clustered(n + 3, 24, 5), clustered(n + 3, 16, 6)
    items = items_of(n + 3)
    out = written(tmp_path / "ix", items[:n], base[:n], projected[:n], weights)
    weights.write_bytes(b"retrained weights")
    moved = -projected  # every projected vector moved
    done = update_index(out, items, base, moved, {**META, "weights_sha256": "w2"}, weights)
    assert done["rebuilt"] and done["added"] == 3
    searcher = ix.Searcher(out)
    assert searcher.nearest(moved[7], 1)[0][0] == items[7].key
    assert meta_of(out)["weights_sha256"] == "w2"
    db = sqlite3.connect(out / ix.TABLE_FILE)
    assert db.execute("SELECT data FROM weights").fetchone()[0] == b"retrained weights"


def test_new_weights_over_the_same_items_are_no_damage(tmp_path: Path, weights: Path):
    """A retrained projection moves every projected row of an unchanged population: an update
    (the graph built again), not a damaged index written afresh."""
    n = 300
    base, projected = clustered(n, 24, 5), clustered(n, 16, 6)
    items = items_of(n)
    out = written(tmp_path / "ix", items, base, projected, weights)
    weights.write_bytes(b"retrained weights")
    why: list[str] = []
    done = update_index(out, items, base, -projected, {**META, "weights_sha256": "w2"}, weights, why)
    assert done is not None and done["rebuilt"] and why == []
    assert ix.Searcher(out).nearest(-projected[7], 1)[0][0] == items[7].key


@pytest.mark.parametrize("why", ["model", "many", "damaged", "damaged graph", "missing"])
def test_anything_else_is_a_full_write(tmp_path: Path, weights: Path, why: str):
    n = 200
    base, projected = clustered(n * 2, 24, 7), clustered(n * 2, 16, 8)
    items = items_of(n * 2)
    out = written(tmp_path / "ix", items[:n], base[:n], projected[:n], weights)
    meta, upto = META, n + 5
    if why == "model":
        meta = {**META, "model_fingerprint": "m2"}
    elif why == "many":
        upto = n * 2  # doubled: rebuilt, not patched
    elif why == "damaged":
        (out / ix.TABLE_FILE).write_bytes(b"not sqlite at all" * 100)
    elif why == "damaged graph":
        data = (out / ix.INDEX_FILE).read_bytes()
        (out / ix.INDEX_FILE).write_bytes(data[: len(data) // 3])
    else:
        (out / vector_rows.PROJECTED_FILE).unlink()
    assert update_index(out, items[:upto], base[:upto], projected[:upto], meta, weights) is None
