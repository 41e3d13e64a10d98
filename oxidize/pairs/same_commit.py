"""``same_commit`` pairs: messages of commits that touch the same files are similar.

Formula (what the triplets teach): for an anchor commit message ``a``, a positive ``p`` —
the message of another commit sharing at least ``training.min_count`` files with ``a``'s
commit — and a negative ``n`` whose commit shares **no** file with it, the projection
learns ``d(a, p) + margin < d(a, n)``. Two commits editing the same files usually work on
one feature, so their messages describe related work.

Commits:
    ``git.commit`` events with a string ``data.message`` (stripped) longer than
    ``training.min_chars`` characters and a ``data.files`` list of 1 to
    :data:`~oxidize.pairs.co_changed.MAX_COMMIT_FILES` distinct files (a tree-wide
    reformat shares files with everything and says nothing). A message that several
    commits share (``"style: apply cargo fmt"``) belongs to the first of them (lowest
    ``seq``); the later ones are left out, as ``same_session`` does with copied notes —
    so every text has one commit and one file set.

Related, positive, negative:
    two commits are *related* when they share ≥ 1 file, *positive* when they share
    ≥ ``training.min_count`` files (default 2: on patina's own log one shared file relates
    a third of all commits to ``src/main.rs``'s 63 commits and gives 9,210 pairs over 670
    commits, median 15 partners each; two shared files keep 2,145 pairs over 349 commits,
    median 6 — commits on the same module, not on the same entry point). Commits sharing
    some but fewer than ``min_count`` files are neither positives nor negatives.

Texts:
    the messages of commits with at least one positive, in ``seq`` order.

Held-out split (:mod:`oxidize.pairs.split`):
    each commit is its own group, dated by its timestamp; the latest commits are held out.
    Queries are held-out messages, relevant = messages of held-out commits sharing
    ≥ ``min_count`` files with it.

Sampling: :mod:`oxidize.pairs.graph`. ``training.event_types`` is not used.

Relations: ``co_changed`` pairs the *files* instead; ``same_session`` pairs session notes.
"""

from __future__ import annotations

from typing import Any

from oxidize.errors import EventLogError
from oxidize.pairs import PairSet
from oxidize.pairs.co_changed import MAX_COMMIT_FILES, commit_table

PAIR_TYPE = "same_commit"


def read_commits(log: Any, min_chars: int, shas: list | None = None,
                 ) -> tuple[list[str], list[list[str]], list[tuple[str, int]], int]:
    """Usable commits in ``seq`` order: ``(messages, files, (timestamp, seq), n_commit_events)``
    (and each one's sha appended to ``shas``); from patina's ``commits`` / ``commit_files``
    tables when the log has no ``git.commit`` event."""
    messages: dict[str, None] = {}
    files: list[list[str]] = []
    first: list[tuple[str, int]] = []
    n_events = 0
    rows = [(event.data.get("message"), event.data.get("files"), event.timestamp, event.seq, event.source_id)
            for event in log.events(("git.commit",))]
    if not rows:  # patina's commits / commit_files tables (seq 0: not an event)
        rows = [(message, files_, timestamp, 0, sha) for sha, message, files_, timestamp in commit_table(log)]
    for message, names, timestamp, seq, sha in rows:
        n_events += 1
        if not isinstance(message, str) or not isinstance(names, list):
            continue
        message = message.strip()
        names = list(dict.fromkeys(f for f in names if isinstance(f, str) and f))
        if len(message) <= min_chars or message in messages or not 1 <= len(names) <= MAX_COMMIT_FILES:
            continue
        messages[message] = None
        files.append(names)
        first.append((timestamp, seq))
        if shas is not None:
            shas.append(sha)
    return list(messages), files, first, n_events


def shared_file_counts(files: list[list[str]]):
    """``(pairs int64[e, 2], shared int64[e])``: commit pairs ``i < j`` sharing ≥ 1 file, and how many."""
    import numpy as np

    by_file: dict[str, list[int]] = {}
    for commit, names in enumerate(files):
        for name in names:
            by_file.setdefault(name, []).append(commit)
    chunks = []
    for commits in by_file.values():
        if len(commits) > 1:
            c = np.asarray(commits, dtype=np.int64)
            i, j = np.triu_indices(len(c), 1)
            chunks.append(c[i] * len(files) + c[j])  # c is increasing: c[i] < c[j]
    if not chunks:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    codes, shared = np.unique(np.concatenate(chunks), return_counts=True)
    return np.stack([codes // len(files), codes % len(files)], axis=1), shared.astype(np.int64)


def generate(log: Any, training: Any, label: str = "") -> PairSet:
    """Build the ``same_commit`` pair set of one projection (see the module docstring).

    Raises:
        EventLogError: no usable ``git.commit`` events, or no two sharing ``min_count`` files.
    """
    import numpy as np

    from oxidize.pairs.graph import graph_pairset
    from oxidize.pairs.split import heldout_groups, holdout_fraction

    min_count = int(getattr(training, "min_count", 2))
    min_chars = int(training.min_chars)
    shas: list = []
    messages, files, first, n_events = read_commits(log, min_chars, shas)
    if not messages:
        raise EventLogError(
            f"{log.path}: no usable commits for same_commit pairs: {n_events:,} git.commit event(s), none "
            f"with a data.message longer than {min_chars} chars (training.min_chars) and a data.files "
            f"list of 1 to {MAX_COMMIT_FILES} files")
    pairs, shared = shared_file_counts(files)
    strong = shared >= min_count
    if not strong.any():
        most = int(shared.max()) if len(shared) else 0
        raise EventLogError(f"{log.path}: no two of {len(messages):,} usable commits share {min_count} or more "
                            f"files (training.min_count; the most shared is {most}); lower training.min_count")
    # Keep commits with a positive, in seq order, and renumber.
    keep = np.zeros(len(messages), dtype=bool)
    keep[pairs[strong].ravel()] = True
    new_id = np.cumsum(keep) - 1
    both_kept = keep[pairs[:, 0]] & keep[pairs[:, 1]]
    related = new_id[pairs[both_kept]]
    positive = new_id[pairs[strong]]
    kept = np.flatnonzero(keep).tolist()
    texts = [messages[i] for i in kept]
    heldout = heldout_groups([first[i] for i in kept], holdout_fraction(training), log.path)
    return graph_pairset(
        log, training, label, pair_type=PAIR_TYPE, noun="commits", texts=texts,
        positive=positive, related=related, first_events=[first[i] for i in kept], heldout=heldout,
        history=_history([kept[i] for i in np.flatnonzero(heldout).tolist()], messages, first, shas,
                         pairs[strong]),
        summary={"min_count": min_count, "commits": len(texts)},
        detail=f" (sharing ≥{min_count} files)")


def _history(later: list[int], messages: list[str], first: list, shas: list[str], strong):
    """Each later commit's subject → the commits sharing ``min_count`` files with it, its own
    message (``seq``: its index key) excluded from the hits (oxidize.pairs.history)."""
    from oxidize.pairs.history import History, subject, usable_subject

    history = History("later commit subjects → commits on the same files")
    partners: dict[int, list[int]] = {}
    for a, b in strong.tolist():
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    for i in sorted(later, key=lambda i: first[i][1]):
        why = usable_subject(messages[i], None)
        if why is not None:
            history.skipped[why] += 1
            continue
        history.queries.append({"id": str(shas[i])[:12], "query": subject(messages[i]),
                                "relevant_docs": [shas[j] for j in partners.get(i, ())],
                                **({"exclude_keys": [first[i][1]]} if first[i][1] else {})})
    if not later:
        history.note = "nothing held out"
    return history
