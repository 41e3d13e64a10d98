"""What a training leaves behind: the weights and ``training.json`` beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oxidize import __version__
from oxidize.util.atomic import write_json
from oxidize.projection import write_weights


def save_weights(path: Path | str, result: Any, settings_sha256: str | None = None) -> None:
    """Write ``path`` (``weights.safetensors``, :func:`oxidize.projection.write_weights`) and
    ``training.json`` beside it, both atomically.

    ``training.json`` holds the per-epoch losses, the per-epoch held-out MRR@10 (index 0 =
    the initial weights), the chosen epoch, the config, the seconds and the shapes.
    """
    from oxidize.train.blas import kernel_family

    path = Path(path)
    shapes = write_weights(path, result.weights, result.config.get("layers"))
    write_json(path.with_name("training.json"), {
        "losses": [float(v) for v in result.losses],
        "heldout_mrr": [float(v) for v in result.heldout_mrr],
        "test_mrr": [float(v) for v in result.test_mrr],
        "chosen_epoch": result.chosen_epoch,
        "stopped_early": bool(result.stopped_early),
        "stop_note": getattr(result, "stop_note", ""),
        "config": result.config,
        "seconds": round(float(result.seconds), 3),
        "shapes": shapes,
        "weights": path.name,
        "oxidize_version": __version__,
        # which OpenBLAS kernel made these bits (oxidize/train/blas.py; the lock's platform key)
        "blas_kernel": kernel_family(),
        # the recipe's training keys as the train step read them (checked by the lock)
        "settings_sha256": settings_sha256,
    })
