"""oxidize's weights as patina's ``mlp-2layer`` file.

patina loads ``w1.weight [hidden, in]``, ``w1.bias``, ``w2.weight [out, hidden]``,
``w2.bias`` and runs ``y = W2 relu(W1 x + b1) + b2`` — no linear path, no normalisation
(its index metric is cosine, so the scale of ``y`` does not matter). oxidize's projection is
``z = W0 x + W2 relu(W1 x + b1) + b2``, normalised. The linear path folds in exactly, since
``x = relu(x) − relu(−x)``:

    W1' = [W1; I; −I]   b1' = [b1; 0; 0]   W2' = [W2, W0, −W0]   b2' = b2

so ``W2' relu(W1' x + b1') + b2' = z`` and the hidden layer grows by ``2 · in`` units (1024 →
2560 for E5's 768 dimensions). A zero ``W0`` (a projection without a linear path) is not
folded. The only difference from oxidize's own forward pass is float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from oxidize import __version__

if TYPE_CHECKING:
    import numpy as np

TENSOR_NAMES = ("w1.weight", "w1.bias", "w2.weight", "w2.bias")


def fold(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """patina's four tensors (float32) computing oxidize's projection before normalisation."""
    import numpy as np

    w1, b1, w2, b2 = (np.asarray(weights[k], np.float32) for k in ("w1", "b1", "w2", "b2"))
    w0 = weights.get("w0")
    if w0 is not None and np.any(w0):
        w0 = np.asarray(w0, np.float32)
        eye = np.eye(w1.shape[1], dtype=np.float32)
        w1 = np.concatenate([w1, eye, -eye])
        b1 = np.concatenate([b1, np.zeros(2 * w1.shape[1], np.float32)])
        w2 = np.concatenate([w2, w0, -w0], axis=1)
    return {"w1.weight": np.ascontiguousarray(w1), "w1.bias": np.ascontiguousarray(b1),
            "w2.weight": np.ascontiguousarray(w2), "w2.bias": np.ascontiguousarray(b2)}


def forward(tensors: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """patina's forward pass on its tensors: ``W2 relu(W1 x + b1) + b2`` for rows ``x``
    (float32, not normalised)."""
    import numpy as np

    x = np.asarray(x, np.float32)
    h = np.maximum(x @ tensors["w1.weight"].T + tensors["w1.bias"], 0)
    return h @ tensors["w2.weight"].T + tensors["w2.bias"]


def write_patina_weights(path: Path | str, tensors: dict[str, np.ndarray]) -> None:
    """Write patina's safetensors file atomically, with patina's metadata keys."""
    from safetensors.numpy import save_file

    from oxidize.util.atomic import atomic_path

    hidden, in_dim = tensors["w1.weight"].shape
    meta = {"architecture": "mlp-2layer", "input_dim": str(in_dim), "hidden_dim": str(hidden),
            "output_dim": str(tensors["w2.weight"].shape[0]), "created_by": f"oxidize {__version__}"}
    with atomic_path(Path(path)) as tmp:
        save_file({k: tensors[k] for k in TENSOR_NAMES}, str(tmp), metadata=meta)
