"""``commit_files`` pairs: a commit's message is close to the files it changed.

Formula (what the triplets teach): for an anchor commit message ``a``, a positive file ``p``
the commit changed and a negative file ``n`` it did not change, the projection learns
``d(a, p) + margin < d(a, n)``. People ask about files in words ("fix a blank line after a
docstring"), and a history holds thousands of such sentences with their answers beside
them; ``co_changed`` learns file → file, which is not what a question is. The projection
then maps a question and a file's text into one space: the index holds files (and their
definitions), as ``co_changed``'s does.

Commits and texts:
    ``git.commit`` events (or patina's ``commits`` tables) touching 1 to
    :data:`~oxidize.pairs.co_changed.MAX_COMMIT_FILES` files. A commit's text is its subject
    and the first paragraph of its body; merges, bots, dependency bumps and subjects of
    fewer than three words teach nothing (:func:`oxidize.pairs.history.usable_subject`), nor
    do changelogs and lock files as positives (:func:`oxidize.pairs.history.common_files`).
    A file's text is the one ``co_changed`` embeds (from its content where the log has it).
    The texts table holds the usable commits' texts, then the files they touched that are
    still at HEAD (where the log knows HEAD), each sorted.

Held-out split (by commit, :mod:`oxidize.pairs.split`):
    the latest commits, ``training.holdout`` of them, never train: the older half of them
    validates (the start map and the epoch are chosen on (commit, file) pairs), the newer
    half tests, and all of them ask the history questions (the same ones ``co_changed``
    asks). The validation and test corpus is the held-out commits' texts and files.

Negatives: half of them a file in the positive's folder that the commit did not change (a
*hard* negative: the sibling a question must not confuse with the answer), the other half
any file the commit did not change; uniform, seeded, with replacement.
"""

from __future__ import annotations

from typing import Any

from oxidize.errors import EventLogError
from oxidize.pairs import PairSet

PAIR_TYPE = "commit_files"
#: Triplets per training (commit, file) pair, by default (``training.pairs: null``), within
#: [1,000, 200,000]. Five, not the ten per text of the other pair types: on click and httpx
#: five gave the same wins as ten (validation +0.125 / +0.152 against +0.106 / +0.145;
#: projection dense on the history questions 0.390 / 0.520 against 0.396 / 0.528) in half
#: the training time, which every build that adds a commit pays again.
TRIPLETS_PER_PAIR = 5


def commit_text(message: str) -> str:
    """A commit's subject and the first paragraph of its body."""
    paragraphs = [p.strip() for p in message.strip().split("\n\n") if p.strip()]
    return " ".join(" ".join(p.split()) for p in paragraphs[:2])


def generate(log: Any, training: Any, label: str = "") -> PairSet:
    """Build the ``commit_files`` pair set (see the module docstring).

    Raises:
        EventLogError: no usable commit, or none left to train on after the split.
    """
    import numpy as np

    from oxidize.pairs.co_changed import MAX_COMMIT_FILES, commit_records, describe_file, file_texts
    from oxidize.pairs.history import common_files, commit_file_questions, usable_subject
    from oxidize.pairs.split import heldout_groups, heldout_summary, holdout_fraction, test_groups

    holdout = holdout_fraction(training)
    records = commit_records(log)
    described = file_texts(log)
    present = set(described) or None
    later = heldout_groups([(c["timestamp"], c["seq"]) for c in records], holdout, log.path) \
        if records else np.zeros(0, dtype=bool)
    # what counts as a changelog is learnt before the cut too: a later commit changes nothing
    common = common_files(c["files"] for c, late in zip(records, later.tolist()) if not late)
    commits, skipped = [], 0
    for record, late in zip(records, later.tolist()):
        message = record.get("message") if isinstance(record.get("message"), str) else ""
        files = [f for f in record["files"] if f not in common and (present is None or f in present)]
        if usable_subject(message, record.get("author")) is None and 1 <= len(record["files"]) <= MAX_COMMIT_FILES \
                and files and len(commit_text(message)) > int(training.min_chars):
            commits.append((commit_text(message), files, late, (record["timestamp"], record["seq"])))
        else:
            skipped += 1
    if not any(not late for _, _, late, _ in commits):
        raise EventLogError(f"{log.path}: nothing to train commit_files on: none of {len(records):,} commit(s) "
                            f"before the held-out cut has a message of three words or more and 1 to "
                            f"{MAX_COMMIT_FILES} files (training.holdout: {holdout:g})")
    # One text per distinct message (the first commit that wrote it), then the files, sorted.
    first: dict[str, int] = {}
    for i, (text, *_rest) in enumerate(commits):
        first.setdefault(text, i)
    kept = sorted(first.values())
    files = sorted({f for i in kept for f in commits[i][1]})
    texts = [commits[i][0] for i in kept] + [described.get(f) or describe_file(f) for f in files]
    file_node = {f: len(kept) + j for j, f in enumerate(files)}
    edges = np.array([(c, file_node[f]) for c, i in enumerate(kept) for f in commits[i][1]],
                     dtype=np.int64).reshape(-1, 2)
    held = np.array([commits[i][2] for i in kept], dtype=bool)
    test = test_groups([commits[i][3] for i in kept], held, log.path) if held.any() else held
    in_test = test[edges[:, 0]]
    in_validation = held[edges[:, 0]] & ~in_test
    train_edges = edges[~held[edges[:, 0]]]

    n_triplets = min(max(TRIPLETS_PER_PAIR * len(train_edges), 1_000), 200_000) if training.pairs is None \
        else int(training.pairs)
    if n_triplets < 1:
        from oxidize.errors import OxidizeError

        raise OxidizeError(f"training.pairs is {training.pairs}; expected a positive number or null (automatic)")
    triplets = _sample(train_edges, files, len(kept), n_triplets, int(training.seed))
    heldout = edges[in_test].astype(np.int32)
    validation = edges[in_validation].astype(np.int32)
    history = commit_file_questions([r for r, late in zip(records, later.tolist()) if late],
                                    common_files(c["files"] for c in records), present)
    stats = log.stats()
    train_commits = int((~held).sum())
    out = {"pair_type": PAIR_TYPE, "commits": len(kept), "files": len(files), "texts": len(texts),
           "anchors": train_commits, "pairs": int(len(train_edges)), "triplets": int(n_triplets),
           "skipped_commits": skipped,
           **heldout_summary(heldout, train_commits, int(held.sum()), validation),
           "event_count": stats.count, "max_seq": stats.max_seq}
    prefix = f"{label}: " if label else ""
    print(f"{prefix}{PAIR_TYPE}: {len(kept):,} commit messages → {len(files):,} files they changed "
          f"({skipped:,} commits left out: merges, bots, bumps, short subjects, over {MAX_COMMIT_FILES} files): "
          f"{len(train_edges):,} training pairs → {n_triplets:,} training triplets; held out the latest "
          f"{int(held.sum()):,} commits ({out['validation_queries']:,} queries validate, "
          f"{out['heldout_queries']:,} test)", flush=True)
    related = np.concatenate([edges, edges[:, ::-1]]).astype(np.int32)
    return PairSet(texts=texts, triplets=triplets, stats=out, heldout=heldout, validation=validation,
                   related=related, history=history)


def _sample(edges, files: list[str], n_commits: int, n: int, seed: int):
    """``n`` (commit, changed file, unchanged file) rows: anchors uniform over the training
    edges (a commit weighs by its files), negatives half from the positive's folder."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder_of = [f.rsplit("/", 1)[0] if "/" in f else "" for f in files]
    by_folder: dict[str, list[int]] = {}
    for j, folder in enumerate(folder_of):
        by_folder.setdefault(folder, []).append(n_commits + j)
    changed: dict[int, set[int]] = {}
    for c, f in edges.tolist():
        changed.setdefault(c, set()).add(f)
    edges = edges[[len(changed[c]) < len(files) for c in edges[:, 0].tolist()]]  # a negative exists
    if not len(edges):
        raise EventLogError("nothing to train commit_files on: every commit changed every file")
    siblings: dict[tuple[int, str], list[int]] = {}
    pick = rng.integers(0, len(edges), size=n)
    hard = rng.random(n) < 0.5
    uniform = rng.integers(0, len(files), size=n) + n_commits
    out = np.empty((n, 3), dtype=np.int32)
    for row, (i, use_hard, neg) in enumerate(zip(pick.tolist(), hard.tolist(), uniform.tolist())):
        commit, positive = edges[i]
        mine = changed[int(commit)]
        if use_hard:
            folder = folder_of[int(positive) - n_commits]
            near = siblings.get((int(commit), folder))
            if near is None:
                near = siblings[(int(commit), folder)] = [f for f in by_folder[folder] if f not in mine]
            if near:
                neg = near[int(rng.integers(0, len(near)))]
        tries = 0
        while neg in mine and tries < 20:  # a commit changes few files: a redraw almost never repeats
            neg = int(rng.integers(0, len(files))) + n_commits
            tries += 1
        out[row] = (commit, positive, neg)
    return out
