"""The eval stage: metrics.json, training.png, the one-line summary, and the quality gate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from oxidize.engine import search_stages as stages
from oxidize.train.trainer import save_weights, train_projection

RECIPE = """\
version: 1
projections:
  semantic:
    layers: [null, 16, {out}]
    epochs: 2
{gate}
"""


def _project(tmp_path: Path, gate: str | None, weights: str = "trained", held: bool = True,
             out: int = 8) -> tuple[str, str]:
    """A recipe and a projection folder with embeddings, triplets, heldout and weights."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_train import grouped_problem

    emb, trip, heldout = grouped_problem(dim=8, nuisance=3.0)  # a start that beats the base
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(out=out, gate=f"    gate: {gate}" if gate else ""))
    folder = tmp_path / "build" / "r" / "semantic"
    folder.mkdir(parents=True)
    np.save(folder / "embeddings.npy", emb)
    np.save(folder / "heldout.npy", heldout if held else np.zeros((0, 2), np.int32))
    result = train_projection(emb, trip, hidden=16, out=out, epochs=2, batch_size=16,
                              learning_rate=1e-3, margin=0.2, seed=0, progress=False,
                              heldout=heldout if held else None)
    if weights == "reversed":  # a useless projection: every text maps to the same point
        result.weights["w0"] = np.zeros_like(result.weights["w0"])
        result.weights["w1"] = np.zeros_like(result.weights["w1"])
        result.weights["b2"] = np.ones_like(result.weights["b2"])  # every text maps to one point
    save_weights(folder / "weights.safetensors", result)
    return str(recipe), str(folder)


def test_eval_writes_metrics_picture_and_summary(tmp_path, capsys):
    recipe, folder = _project(tmp_path, gate="base")
    assert stages.build_eval(recipe, "r", "semantic", folder) is None
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    assert metrics["primary_metric"] == "mrr@10" and metrics["heldout_queries"] > 0
    assert metrics["projection"]["mrr@10"] >= metrics["base"]["mrr@10"]
    assert metrics["base"]["mrr@10"] > metrics["random"]["mrr@10"]
    assert (Path(folder) / "training.png").read_bytes()[:4] == b"\x89PNG"
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("r:semantic: eval on the test part: mrr@10 projection ")
    assert f"({metrics['heldout_queries']} held-out queries)" in line


def test_gate_failure_names_projection_and_numbers(tmp_path):
    recipe, folder = _project(tmp_path, gate="base", weights="reversed")
    failed = stages.build_eval(recipe, "r", "semantic", folder)
    message = str(failed)
    assert "r:semantic fails its gate 'base'" in message
    assert "projections.semantic.gate" in message
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    assert f"{metrics['projection']['mrr@10']:.4f}" in message
    assert f"{metrics['base']['mrr@10']:.4f}" in message


def test_no_gate_means_no_failure(tmp_path):
    recipe, folder = _project(tmp_path, gate=None, weights="reversed")
    assert stages.build_eval(recipe, "r", "semantic", folder) is None


def test_no_heldout_queries_skips_the_comparison(tmp_path, capsys):
    recipe, folder = _project(tmp_path, gate="base", held=False)
    assert stages.build_eval(recipe, "r", "semantic", folder) is None
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    assert metrics["heldout_queries"] == 0 and metrics["projection"] is None
    assert "no held-out queries" in capsys.readouterr().out
    assert (Path(folder) / "training.png").is_file()


DEV_DB = Path(__file__).resolve().parents[2] / "shared" / "data" / "patina-dev.db"


@pytest.mark.skipif(not DEV_DB.is_file(), reason=f"{DEV_DB} is absent (development data)")
@pytest.mark.skipif(not os.environ.get("OXIDIZE_SLOW"),
                    reason="embeds and trains on patina-dev.db for minutes; set OXIDIZE_SLOW=1")
def test_default_projections_are_not_worse_than_the_base_on_patina_dev(tmp_path):
    import subprocess
    import sys

    (tmp_path / "recipes").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    (tmp_path / "recipes" / "dev.yaml").write_text(
        f"version: 1\neventlog: {DEV_DB}\nprojections:\n"
        "  semantic: {gate: base}\n  temporal: {gate: base}\n")
    proc = subprocess.run([sys.executable, "-m", "doit"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("semantic", "temporal"):
        m = json.loads((tmp_path / "build" / "dev" / name / "metrics.json").read_text())
        assert m["projection"]["mrr@10"] >= 0.99 * m["base"]["mrr@10"], (name, m)
