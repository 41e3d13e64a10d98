"""``training.png``: how a projection's training went, in one picture.

Two panels sharing the epoch axis: the training loss per epoch (left), and MRR@10 per epoch
on the validation part (which chose the epoch) and the test part (right; epoch 0 is the
start map) with the base embedding's and a random ranking's test MRR@10 drawn as horizontal
lines and the chosen epoch marked. One glance
says whether training helped, and whether the projection beats the plain embedding.

matplotlib (Agg backend, no display needed) is imported inside :func:`plot_training`, which
only the eval task calls; loading or listing doit tasks never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_training(path: Path | str, *, title: str, losses: Sequence[float],
                  heldout_mrr: Sequence[float], chosen_epoch: int | None,
                  base_mrr: float | None, random_mrr: float | None,
                  projection_mrr: float | None = None, test_mrr: Sequence[float] = (),
                  loss_name: str = "triplet") -> None:
    """Write the training picture to ``path`` (PNG), atomically.

    Args:
        title: the projection's name (``"example:semantic"``).
        losses: mean training loss of epochs 1..n.
        heldout_mrr: validation MRR@10 of epochs 0..n (empty: no validation split).
        test_mrr: test MRR@10 of epochs 0..n (recorded, never used to choose).
        chosen_epoch: the epoch whose weights were kept (marked), or ``None``.
        base_mrr, random_mrr: the two reference levels (``None``: not drawn).
        projection_mrr: the kept projection's MRR@10, for the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from oxidize.util.atomic import atomic_path

    fig, (ax_loss, ax_mrr) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    epochs = list(range(1, len(losses) + 1))
    ax_loss.plot(epochs, losses, marker="o", color="tab:blue")
    ax_loss.set_title(f"training loss ({loss_name})")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean loss")
    ax_loss.set_xlim(0, max(len(losses), 1) + 0.5)
    ax_loss.grid(alpha=0.3)

    if heldout_mrr or test_mrr:
        if heldout_mrr:
            ax_mrr.plot(range(len(heldout_mrr)), heldout_mrr, marker="o", color="tab:green",
                        label="validation (chooses)")
        if test_mrr:
            ax_mrr.plot(range(len(test_mrr)), test_mrr, marker="s", color="tab:purple",
                        label="test")
        if heldout_mrr and chosen_epoch is not None and 0 <= chosen_epoch < len(heldout_mrr):
            kept = (f"kept: epoch {chosen_epoch}" +
                    (f" ({projection_mrr:.3f})" if projection_mrr is not None else ""))
            ax_mrr.plot([chosen_epoch], [heldout_mrr[chosen_epoch]], marker="*", markersize=16,
                        color="tab:red", linestyle="none", label=kept)
        if base_mrr is not None:
            ax_mrr.axhline(base_mrr, color="black", linestyle="--", label=f"base (test) {base_mrr:.3f}")
        if random_mrr is not None:
            ax_mrr.axhline(random_mrr, color="grey", linestyle=":",
                           label=f"random (test) {random_mrr:.3f}")
        ax_mrr.set_ylim(0, 1.15)  # headroom: the legend sits above the curves, hiding none
        ax_mrr.legend(loc="upper center", fontsize="small", ncol=3, framealpha=0.9)
    else:
        ax_mrr.text(0.5, 0.5, "no held-out queries\n(training.holdout is 0 or too little data)",
                    ha="center", va="center", transform=ax_mrr.transAxes)
    ax_mrr.set_title("MRR@10 (epoch 0 = the start map)")
    ax_mrr.set_xlabel("epoch")
    ax_mrr.set_xlim(-0.5, max(len(losses), 1) + 0.5)
    ax_mrr.grid(alpha=0.3)
    for ax in (ax_loss, ax_mrr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        # no Software key: the bytes depend on the numbers drawn, not on matplotlib's version
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
