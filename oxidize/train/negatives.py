"""Hard negatives: replace each triplet's random negative by one of the anchor's nearest
*unrelated* texts in the base embedding (``training.negatives: hard``).

Why: with random negatives the triplet loss is near zero after one epoch — a random note of
another session is already far away — so training learns little but noise. A negative
drawn from the anchor's :data:`POOL` nearest training texts that are neither in its group
(its session) nor related to it (a co-changed file, a commit sharing files) is a
distinction the base embedding gets wrong, which is what a projection can add.

Deterministic: candidates, ranking and the draw depend only on the inputs and ``seed``
(ties in similarity are broken by text index). Bounded: similarities are computed a block
of anchors at a time against at most :data:`MAX_CANDIDATES` training texts (an evenly
spaced subset beyond that).
"""

from __future__ import annotations

import numpy as np

#: How many of the nearest unrelated texts an anchor's negatives are drawn from.
POOL = 20
#: Most candidate texts ranked per anchor (evenly spaced beyond this: bounded time).
MAX_CANDIDATES = 20_000
#: Anchors per similarity block.
BLOCK = 512


def mine_hard_negatives(emb: np.ndarray, triplets: np.ndarray, groups: np.ndarray,
                        related: np.ndarray, seed: int, pool: int = POOL) -> tuple[np.ndarray, int]:
    """Triplets with hard negatives (anchors and positives unchanged), and how many rows
    kept their random negative because the anchor had no unrelated candidate.

    Args:
        emb: ``float32 [n_texts, dim]`` unit rows (the base embedding).
        triplets: ``int [n, 3]`` (anchor, positive, negative).
        groups: ``int [n_texts]``: a text's group, or -1 (none).
        related: ``int [k, 2]`` undirected edges: pairs never to be each other's negative.
        seed: the draw's seed.
    """
    triplets = np.asarray(triplets, dtype=np.int64)
    out = triplets.copy()
    texts = np.unique(triplets)  # the training texts: the only candidates
    candidates = texts if len(texts) <= MAX_CANDIDATES else \
        texts[np.linspace(0, len(texts) - 1, MAX_CANDIDATES).astype(np.int64)]
    forbidden = _forbidden(related, len(emb))
    anchors = np.unique(triplets[:, 0])
    pools: dict[int, np.ndarray] = {}
    cand_vectors = np.asarray(emb[candidates], dtype=np.float32)
    cand_groups = np.asarray(groups)[candidates]
    want = min(len(candidates), pool + 64)  # room for excluded ones
    for lo in range(0, len(anchors), BLOCK):
        block = anchors[lo:lo + BLOCK]
        sims = np.asarray(emb[block], dtype=np.float32) @ cand_vectors.T  # (block, candidates)
        top = np.argpartition(-sims, want - 1, axis=1)[:, :want] if want < len(candidates) \
            else np.tile(np.arange(len(candidates)), (len(block), 1))
        for row, anchor in enumerate(block):
            order = top[row][np.lexsort((candidates[top[row]], -sims[row, top[row]]))]
            chosen = candidates[order]
            ok = (chosen != anchor) & ((cand_groups[order] < 0) | (cand_groups[order] != groups[anchor]))
            bad = forbidden.get(int(anchor))
            if bad is not None:
                ok &= ~np.isin(chosen, bad)
            pools[int(anchor)] = chosen[ok][:pool]
    rng = np.random.default_rng(seed)
    draws = rng.random(len(triplets))
    kept = 0
    for i, (anchor, positive, _) in enumerate(triplets):
        options = pools[int(anchor)]
        options = options[options != positive]
        if len(options) == 0:
            kept += 1
            continue
        out[i, 2] = options[int(draws[i] * len(options))]
    return out.astype(np.int32), kept


def _forbidden(related: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """Each text's related texts (both directions)."""
    related = np.asarray(related, dtype=np.int64).reshape(-1, 2)
    if len(related) == 0:
        return {}
    both = np.concatenate([related, related[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    keys, starts = np.unique(both[:, 0], return_index=True)
    ends = np.append(starts[1:], len(both))
    return {int(k): both[s:e, 1] for k, s, e in zip(keys, starts, ends)}
