"""The export into patina: a fake checkout with patina's recipe verbatim builds, and the files
it writes are read back by patina's rules — tensor names and metadata, its forward pass, its
key ranges, its way of embedding — with the ``usearch`` package."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from patina_checkout import make_patina_checkout

EXPORTS = Path(".patina/local/data/embeddings/e5-base-v2/projections")
BUILD = Path(".patina/local/oxidize/patina")


def run(root: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXIDIZE_")}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "oxidize.engine.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- patina's rules, written again from PATINA.md (not oxidize's code) ----------------------

def patina_load(path: Path) -> tuple[dict, dict]:
    """patina's load_safetensors: the four names, dimensions from the shapes."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in ("w1.weight", "w1.bias", "w2.weight", "w2.bias")}
        meta = f.metadata()
    assert all(t.dtype == np.float32 for t in tensors.values())
    return tensors, meta


def patina_forward(t: dict, x: np.ndarray) -> np.ndarray:
    hidden = np.maximum(np.einsum("hi,ni->nh", t["w1.weight"], x) + t["w1.bias"], 0)
    return np.einsum("oh,nh->no", t["w2.weight"], hidden) + t["w2.bias"]


class PatinaEmbedder:
    """patina's onnx.rs: prefix, one text per run, mean pooling over the mask, L2."""

    def __init__(self, model_dir: Path):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))

    def embed(self, text: str, prefix: str) -> np.ndarray:
        enc = self.tokenizer.encode(prefix + text)
        ids = np.array([enc.ids], np.int64)
        mask = np.array([enc.attention_mask], np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        names = {i.name for i in self.session.get_inputs()}
        hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True))[0].astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def restore(path: Path):
    import onnxruntime  # noqa: F401 - usearch first crashes onnxruntime's import (oxidize/search/index.py)
    from usearch.index import Index

    index = Index.restore(str(path), view=False)
    assert index is not None, path
    return index


def patina_texts(db: Path, name: str) -> dict[int, str]:
    """key → text by patina's queries (PATINA.md), the parts this fixture has."""
    conn = sqlite3.connect(db)
    out: dict[int, str] = {}
    if name == "semantic":
        for seq, content in conn.execute(
                "SELECT seq, json_extract(data, '$.content') c FROM eventlog WHERE event_type IN "
                "('session.decision','session.pattern','session.goal','session.work','session.context') "
                "AND c IS NOT NULL AND length(c) > 20"):
            out[seq] = content
        for rowid, file, fname, params, ret, pub, asy in conn.execute(
                "SELECT rowid, file, name, parameters, return_type, is_public, is_async FROM function_facts "
                "WHERE name != ''"):
            text = f"Function `{fname}` in file `{file}`" + (", public" if pub else "") + \
                (", async" if asy else "") + (f", parameters: {params}" if params else "") + \
                (f", returns: {ret}" if ret else "")
            out[1_000_000_000 + rowid] = text
        for rowid, pid, title, purpose, content, tags, path in conn.execute(
                "SELECT p.rowid, p.id, p.title, p.purpose, f.content, p.tags, p.file_path FROM patterns p "
                "LEFT JOIN pattern_fts f ON p.id = f.id"):
            out[2_000_000_000 + rowid] = (f"Pattern: {title} - {pid}. Purpose: {purpose}. Tags: {tags}. "
                                          f"Content: {content[:500]}. File: {path}")
        for rowid, sha, message in conn.execute("SELECT rowid, sha, message FROM commits "
                                                "WHERE length(message) > 30"):
            out[3_000_000_000 + rowid] = f"Commit {sha[:7]}: {message}"
        for rowid, bid, statement, persona, facets, conf, ent in conn.execute(
                "SELECT rowid, id, statement, persona, facets, confidence, entrenchment FROM beliefs "
                "WHERE status = 'active'"):
            out[4_000_000_000 + rowid] = (f"Belief: {bid} - {statement}. Persona: {persona}. Facets: {facets}. "
                                          f"Confidence: {conf:.2f}, Entrenchment: {ent}")
        for seq, etype, number, title, body in conn.execute(
                "SELECT seq, event_type, source_id, json_extract(data, '$.title') t, json_extract(data, '$.body') "
                "FROM eventlog WHERE event_type IN ('forge.issue', 'forge.pr') AND t IS NOT NULL"):
            kind = "PR" if etype == "forge.pr" else "Issue"
            out[5_000_000_000 + seq] = f"{kind} #{number}: {title}" + (f"\n{body}" if body else "")
    elif name == "temporal":
        kinds = {"rs": "Rust source", "py": "Python source", "md": "Markdown document", "toml": "TOML config",
                 "sh": "Shell script"}
        files = [r[0] for r in conn.execute("SELECT DISTINCT file_a FROM co_changes UNION "
                                            "SELECT DISTINCT file_b FROM co_changes ORDER BY 1")]
        out = {i: f"File: {f} ({kinds.get(f.rsplit('.', 1)[-1], 'file')})" for i, f in enumerate(files)}
    else:
        names = [r[0] for r in conn.execute("SELECT DISTINCT caller FROM call_graph UNION "
                                            "SELECT DISTINCT callee FROM call_graph ORDER BY 1")]
        out = {i: f"Function: {n} (" + ("Rust function" if "::" in n else "method call" if "." in n
                                        else "type or constructor" if n[:1].isupper() else "function") + ")"
               for i, n in enumerate(names)}
    conn.close()
    return out


# --- the folded weights ---------------------------------------------------------------------

def test_the_folded_linear_path_is_exact(tmp_path: Path):
    from oxidize.patina.weights import fold, write_patina_weights
    from oxidize.projection import project

    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((32, 24)).astype(np.float32) * 0.2,
               "b1": rng.standard_normal(32).astype(np.float32) * 0.1,
               "w2": rng.standard_normal((8, 32)).astype(np.float32) * 0.2,
               "b2": rng.standard_normal(8).astype(np.float32) * 0.1,
               "w0": rng.standard_normal((8, 24)).astype(np.float32)}
    write_patina_weights(tmp_path / "p.safetensors", fold(weights))
    tensors, meta = patina_load(tmp_path / "p.safetensors")
    assert tensors["w1.weight"].shape == (32 + 2 * 24, 24) and tensors["w2.weight"].shape == (8, 80)
    assert meta["architecture"] == "mlp-2layer" and meta["input_dim"] == "24"
    assert meta["hidden_dim"] == "80" and meta["output_dim"] == "8" and meta["created_by"].startswith("oxidize")
    x = rng.standard_normal((200, 24)).astype(np.float32)
    ours, theirs = project(weights, x), patina_forward(tensors, x)
    assert min(cosine(a, b) for a, b in zip(ours, theirs)) >= 0.9999
    # Without the linear path nothing is folded in.
    plain = fold({**weights, "w0": np.zeros_like(weights["w0"])})
    assert plain["w1.weight"].shape == (32, 24)


# --- a whole checkout -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("patina")
    root, home = base / "checkout", base / "home"
    make_patina_checkout(root, home)
    exports = root / EXPORTS
    exports.mkdir(parents=True)
    (exports / "temporal.safetensors").write_bytes(b"an older build's projection")
    db = root / ".patina/local/data/patina.db"
    before = sha256(db)
    proc = run(root, home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256(db) == before, "the build wrote to patina's database"
    return root, home, proc


def test_patinas_recipe_verbatim_builds_and_exports(built):
    root, _home, proc = built
    assert "patina:semantic: exported to patina" in proc.stdout
    assert "patina:dependency: not exported to patina: no held-out queries" in proc.stdout
    for name in ("temporal", "dependency"):
        assert f"patina:{name}: not exported to patina: " in proc.stdout
        assert not (root / EXPORTS / f"{name}.safetensors").exists()  # the older one is gone
        assert (root / EXPORTS / f"{name}.usearch").is_file()
    assert (root / EXPORTS / "semantic.safetensors").is_file()
    assert not list((root / EXPORTS).glob(".*tmp*")), "temporary files left behind"
    assert not (root / "build").exists()


def test_patinas_forward_pass_on_the_exported_tensors_equals_oxidizes(built):
    from oxidize.projection import load_weights, project

    root, _home, _ = built
    tensors, meta = patina_load(root / EXPORTS / "semantic.safetensors")
    assert meta["architecture"] == "mlp-2layer"
    hidden, in_dim = tensors["w1.weight"].shape
    assert in_dim == 768 and tensors["w2.weight"].shape == (256, hidden)
    assert (meta["input_dim"], meta["hidden_dim"], meta["output_dim"]) == ("768", str(hidden), "256")
    x = np.random.default_rng(1).standard_normal((300, 768)).astype(np.float32)
    ours = project(load_weights(root / BUILD / "semantic/weights.safetensors"), x)
    theirs = patina_forward(tensors, x)
    assert min(cosine(a, b) for a, b in zip(ours, theirs)) >= 0.9999


@pytest.mark.parametrize("name", ["semantic", "temporal", "dependency"])
def test_every_key_resolves_by_patinas_rules_and_holds_patinas_vector(built, name):
    root, home, _ = built
    texts = patina_texts(root / ".patina/local/data/patina.db", name)
    index = restore(root / EXPORTS / f"{name}.usearch")
    keys = sorted(int(k) for k in index.keys)
    assert keys == sorted(texts), f"{name}: keys differ from patina's population"
    if name == "semantic":
        ranges = {k // 1_000_000_000 for k in keys}
        assert ranges == {0, 1, 2, 3, 4, 5}  # sessions, functions, patterns, commits, beliefs, forge
    embedder = PatinaEmbedder(home / ".patina/cache/models/e5-base-v2")
    projection = root / EXPORTS / f"{name}.safetensors"
    tensors = patina_load(projection)[0] if projection.exists() else None
    for key in keys[:: max(1, len(keys) // 25)]:
        raw = embedder.embed(texts[key], "passage: ")
        expected = patina_forward(tensors, raw[None])[0] if tensors is not None else raw
        stored = index.get(key)
        assert stored.shape == expected.shape
        assert cosine(stored, expected) >= 0.9999, (name, key, texts[key])


def test_a_patina_query_finds_its_session(built):
    root, home, _ = built
    db = root / ".patina/local/data/patina.db"
    conn = sqlite3.connect(db)
    seq, content, session = conn.execute(
        "SELECT seq, json_extract(data, '$.content'), source_id FROM eventlog "
        "WHERE event_type = 'session.goal' ORDER BY seq DESC LIMIT 1").fetchone()
    embedder = PatinaEmbedder(home / ".patina/cache/models/e5-base-v2")
    tensors = patina_load(root / EXPORTS / "semantic.safetensors")[0]
    query = patina_forward(tensors, embedder.embed(content, "query: ")[None])[0]
    hits = restore(root / EXPORTS / "semantic.usearch").search(query, 5)
    top = [int(k) for k in hits.keys]
    sessions = {s for (s,) in conn.execute(
        f"SELECT source_id FROM eventlog WHERE seq IN ({','.join(map(str, top))})")}
    assert session in sessions


def test_reexport_is_incremental_and_a_removed_file_is_rebuilt(built):
    root, home, _ = built
    assert run(root, home, "stale", "--check").returncode == 0
    quiet = run(root, home)
    assert quiet.returncode == 0 and ".  patina:semantic.export" not in quiet.stdout
    (root / EXPORTS / "semantic.safetensors").unlink()
    stale = run(root, home, "stale")
    assert "patina:semantic.export" in stale.stdout and "semantic.safetensors" in stale.stdout
    again = run(root, home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "patina:semantic: exported to patina" in again.stdout
    assert (root / EXPORTS / "semantic.safetensors").is_file()
    record = json.loads((root / BUILD / "semantic/export.json").read_text())
    assert record["embedded"] == 0 and record["cached"] == record["items"]


def test_vectors_are_patinas_float_arithmetic_not_oxidizes_int8_kernels(tmp_path: Path):
    from oxidize.embed.int8 import cpu_has_int8_dot

    root, home = tmp_path / "c", tmp_path / "h"
    make_patina_checkout(root, home, sessions=12, int8_weights=True)
    proc = run(root, home, "patina:semantic")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((root / BUILD / "semantic/export.json").read_text())
    model = json.loads((root / ".patina/local/oxidize/patina/model.json").read_text())
    # On a CPU with int8 dot products the build embeds on int8 kernels, patina does not.
    assert (record["arithmetic_fingerprint"] != model["fingerprint"]) == cpu_has_int8_dot()
    texts = patina_texts(root / ".patina/local/data/patina.db", "semantic")
    index = restore(root / EXPORTS / "semantic.usearch")
    projection = root / EXPORTS / "semantic.safetensors"
    tensors = patina_load(projection)[0] if projection.exists() else None
    embedder = PatinaEmbedder(home / ".patina/cache/models/e5-base-v2")
    for key in sorted(texts)[::10]:
        raw = embedder.embed(texts[key], "passage: ")
        expected = patina_forward(tensors, raw[None])[0] if tensors is not None else raw
        assert cosine(index.get(key), expected) >= 0.99999, (key, texts[key])


def test_temporal_is_judged_on_patinas_file_texts(tmp_path: Path):
    """The projection trained on oxidize's file texts; patina indexes `File: path (kind)`. The
    verdict scores the held-out pairs on the vectors of patina's texts, found by path."""
    from oxidize.evaluate import compare
    from oxidize.pairs.co_changed import describe_file
    from oxidize.patina.export import _judged_on_patina_texts
    from oxidize.patina.population import Population

    files = [f"src/m{i}.rs" for i in range(8)]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps(describe_file(f)) + "\n" for f in files))
    heldout = np.array([[0, 1], [1, 0], [2, 3], [3, 2], [4, 5], [5, 4]], np.int32)
    np.save(tmp_path / "heldout.npy", heldout)
    rng = np.random.default_rng(0)
    population = Population(names=list(reversed(files)))  # patina's order differs from oxidize's
    raw = rng.standard_normal((8, 16)).astype(np.float32)
    for a, b in ((0, 1), (2, 3), (4, 5)):  # related files: near-identical vectors in patina's rows
        raw[7 - b] = raw[7 - a] + 0.01
    weights = {"w1": rng.standard_normal((4, 16)).astype(np.float32), "b1": np.zeros(4, np.float32),
               "w2": rng.standard_normal((3, 4)).astype(np.float32), "b2": np.zeros(3, np.float32),
               "w0": rng.standard_normal((3, 16)).astype(np.float32)}
    judged = _judged_on_patina_texts(tmp_path, population, raw, weights)
    expected = compare(raw[[7 - i for i in range(8)]], heldout, weights)
    assert expected["base"]["mrr@10"] == 1.0
    assert judged.export is False  # nothing beats a perfect raw embedding
    assert "raw embedding's 1.000 on patina's file texts (6 queries)" in judged.reason
    assert _judged_on_patina_texts(tmp_path, Population(names=files[:5]), raw, weights) is None


def test_a_database_without_co_changes_is_one_clear_line(tmp_path: Path):
    from oxidize.errors import EventLogError
    from oxidize.patina.population import read_population

    root = make_patina_checkout(tmp_path / "c", tmp_path / "h", sessions=4)
    db = root / ".patina/local/data/patina.db"
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE co_changes")
    conn.execute("DROP TABLE function_facts")
    conn.commit()
    conn.close()
    with pytest.raises(EventLogError, match="has no `co_changes` table.*patina scrape"):
        read_population(db, "temporal")
    semantic = read_population(db, "semantic")  # patina's own query would fail; parts present still go in
    assert semantic.absent == ["function_facts"] and "functions" not in semantic.parts
    assert semantic.parts["session notes"] == 4 * 8


def test_an_unwritable_export_folder_is_one_line_and_nothing_half_written(tmp_path: Path):
    root, home = tmp_path / "c", tmp_path / "h"
    make_patina_checkout(root, home, sessions=12)
    exports = root / EXPORTS
    exports.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(exports)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        proc = run(root, home, "patina:semantic")
    finally:
        subprocess.run(["chattr", "-i", str(exports)], check=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out and "PermissionError" not in out
    assert f"cannot write in {EXPORTS}: permission denied" in out
    assert list(exports.iterdir()) == []
    assert not (root / BUILD / "semantic/export.json").exists()


def test_query_sets_decide_the_export_when_given():
    """With eval.queries, people's questions decide whether patina gets the projection: its
    dense MRR@10 against the raw embedding's, weighted by each set's questions."""
    from oxidize.patina.export import verdict

    held = {"primary_metric": "mrr@10", "heldout_queries": 40,
            "projection": {"mrr@10": 0.7}, "base": {"mrr@10": 0.6}}
    assert verdict(held).export and not verdict(held).decided_by_queries

    def sets(mine_a, raw_a, mine_b, raw_b):
        return [{"name": "a", "queries": 30, "results": {"projection dense": {"mrr@10": mine_a},
                                                         "raw dense": {"mrr@10": raw_a}}},
                {"name": "b", "queries": 10, "results": {"projection dense": {"mrr@10": mine_b},
                                                         "raw dense": {"mrr@10": raw_b}}}]

    losing = verdict({**held, "query_sets": sets(0.5, 0.6, 0.9, 0.7)})  # 0.6 against 0.625
    assert not losing.export and losing.decided_by_queries
    assert "query sets (a, b; 40 queries)" in losing.reason and "does not beat" in losing.reason
    winning = verdict({**held, "query_sets": sets(0.7, 0.6, 0.5, 0.6)})  # 0.65 against 0.6
    assert winning.export and "beats the raw embedding's 0.600" in winning.reason
