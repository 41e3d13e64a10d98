"""``same_session`` pairs: two notes from one work session are closer than notes from two.

Formula (what the triplets teach): for an anchor text ``a`` from session ``S``, a positive
``p`` from ``S`` (``p ≠ a``) and a negative ``n`` from another session, the projection is
trained so that ``d(a, p) + margin < d(a, n)``. A session's decisions, patterns and
observations are about one piece of work, so "written in the same session" is a cheap,
label-free signal of "about the same thing".

Observations:
    events whose type is in ``training.event_types`` and whose ``data.content`` is a
    string longer than ``training.min_chars`` characters after stripping whitespace. The
    stripped text is what gets embedded.

Texts table:
    the unique observation texts of usable sessions, in order of first appearance by
    ``seq``. A text that occurs in two sessions (a copied bullet) belongs to the session
    that wrote it first; later sessions do not count it. So every text has exactly one
    session, and no triplet can have its positive or negative equal to its anchor text.
    A session is usable when it keeps at least two distinct texts; at least two usable
    sessions are needed (the negative comes from another one).

Sampling (``numpy.random.default_rng(training.seed)``, fully vectorised):
    the **anchor is uniform over the texts table**, i.e. its session is chosen with
    probability proportional to the session's number of texts (not of ordered pairs,
    which would let a few long sessions dominate quadratically). The positive is uniform
    over the anchor session's other texts, the negative uniform over the texts of all other
    sessions. Draws are with replacement; the same log and settings give byte-identical
    outputs. Number of triplets: ``training.pairs``, else 10 per text clamped to
    [1,000, 200,000] (:func:`oxidize.pairs.default_pair_count`).

Held-out split (:mod:`oxidize.pairs.split`, ``training.holdout``):
    a session is a group, dated by its first owned text's timestamp; the latest usable
    sessions holding about ``holdout`` of the texts are held out. Their texts stay in the texts table but are never sampled;
    ``heldout.npy`` pairs each held-out text (query) with the other texts of its session.
    A text copied into a later session belongs to the earlier one only (see above), so it
    is on one side of the cut. Anchors, and the automatic number of triplets, count only
    training texts; at least two training sessions are needed.

Relations: ``co_changed`` / ``same_commit`` (other modules) pair texts by shared files
or commits instead of shared sessions.
"""

from __future__ import annotations

from typing import Any

from oxidize.errors import EventLogError, OxidizeError
from oxidize.pairs import PairSet, default_pair_count
from oxidize.pairs.split import (heldout_groups, heldout_summary, holdout_fraction, pairs_within_groups,
                                      test_groups)

PAIR_TYPE = "same_session"


def collect_sessions(log: Any, event_types: tuple[str, ...], min_chars: int,
                     first_events: list | None = None,
                     names: list | None = None) -> tuple[list[str], list[int], int]:
    """Read observations and assign each unique text to the first session that wrote it.

    When ``first_events`` is a list, the ``(timestamp, seq)`` of each session's first owned
    text is appended to it, in session order (the session's time for the held-out split);
    when ``names`` is a list, each session's id.

    Returns:
        ``(texts, owner, n_sessions)``: every unique qualifying text in order of first
        appearance, the session number (0-based, order of first appearance) that owns
        each, and the number of sessions seen.
    """
    # One pass, no per-event function calls beyond the necessary: this loop is the pairs
    # stage's hot path on a large log. The dict keeps insertion order: the texts table.
    seen: dict[str, None] = {}
    session_ids: dict[str, int] = {}
    owner: list[int] = []
    add_owner = owner.append
    no_text: list[int] = []
    for event in log.events(event_types):
        content = event.data.get("content")
        if not isinstance(content, str):
            no_text.append(event.seq)
            continue
        content = content.strip()
        if len(content) <= min_chars or content in seen:
            continue
        session = session_ids.get(event.source_id)
        if session is None:
            session = session_ids[event.source_id] = len(session_ids)
            if first_events is not None:
                first_events.append((event.timestamp, event.seq))
            if names is not None:
                names.append(event.source_id)
        seen[content] = None
        add_owner(session)
    if no_text:
        import warnings

        from oxidize.eventlog import EventLogWarning

        first = ", ".join(map(str, no_text[:5])) + (", …" if len(no_text) > 5 else "")
        warnings.warn(EventLogWarning(f"{log.path}: skipped {len(no_text):,} note(s) whose "
                                      f"data.content is null or not a string: seq {first}"))
    return list(seen), owner, len(session_ids)


def generate(log: Any, training: Any, label: str = "") -> PairSet:
    """Build the ``same_session`` pair set of one projection (see the module docstring).

    Args:
        log: an open :class:`~oxidize.eventlog.EventLog`.
        training: the projection's ``TrainingConfig``; reads ``event_types``, ``min_chars``,
            ``pairs`` and ``seed``.
        label: prefix of the summary line printed to stdout.

    Raises:
        EventLogError: fewer than two sessions have two or more usable texts.
        OxidizeError: ``training.pairs`` is set but not positive.
    """
    import numpy as np

    event_types = tuple(training.event_types)
    min_chars = int(training.min_chars)
    first_events: list = []
    names: list = []
    all_texts, all_owner, n_seen = collect_sessions(log, event_types, min_chars, first_events, names)

    owner = np.asarray(all_owner, dtype=np.int64)
    per_session = np.bincount(owner, minlength=n_seen) if n_seen else np.zeros(0, dtype=np.int64)
    usable = per_session >= 2
    n_usable = int(usable.sum())
    if n_usable < 2:
        types = ", ".join(event_types) if event_types else "(none)"
        raise EventLogError(
            f"{log.path}: no usable sessions for same_session pairs: {n_usable} session(s) "
            f"have ≥2 observations of types {types} longer than {min_chars} chars "
            f"({n_seen} session(s) have any); at least 2 such sessions are needed")

    # Keep the texts of usable sessions, still in first-appearance order; renumber sessions.
    keep = usable[owner]
    texts = [text for text, kept in zip(all_texts, keep.tolist()) if kept]
    session_number = np.cumsum(usable) - 1  # old session id → 0..n_usable-1 (for usable ones)
    owner = session_number[owner[keep]]
    n_all = len(texts)

    # Held-out split by time (oxidize.pairs.split): the latest usable sessions are held out.
    # Their texts stay in the table but the sampling below sees only the training sessions'
    # texts (`train_ids`), with sessions renumbered 0..n_train-1.
    holdout = holdout_fraction(training)
    held_session = heldout_groups([fe for fe, u in zip(first_events, usable.tolist()) if u], holdout, log.path,
                                  weights=np.bincount(owner, minlength=n_usable).tolist())
    held_text = held_session[owner]
    test_session = test_groups([fe for fe, u in zip(first_events, usable.tolist()) if u], held_session,
                               log.path, weights=np.bincount(owner, minlength=n_usable).tolist())
    heldout = pairs_within_groups(owner, test_session[owner])
    validation = pairs_within_groups(owner, (held_session & ~test_session)[owner])
    n_train = n_usable - int(held_session.sum())
    if n_train < 2:
        raise EventLogError(
            f"{log.path}: only {n_train} of {n_usable} usable session(s) left for same_session training "
            f"after holding out the latest {int(held_session.sum())} (training.holdout: {holdout:g}); "
            f"at least 2 are needed: lower training.holdout")
    session_of = owner.astype(np.int32)  # every text's session: never a hard negative of its own
    train_ids = np.flatnonzero(~held_text)
    owner = (np.cumsum(~held_session) - 1)[owner[train_ids]]
    n_texts = len(train_ids)

    n_triplets = default_pair_count(n_texts) if training.pairs is None else int(training.pairs)
    if n_triplets < 1:
        raise OxidizeError(f"training.pairs is {training.pairs}; expected a positive number or null (automatic)")

    # Group text ids by session: grouped[start[s] : start[s] + size[s]] are session s's texts.
    grouped = np.argsort(owner, kind="stable")
    size = np.bincount(owner, minlength=n_train)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    position = np.empty(n_texts, dtype=np.int64)  # text id → its index in `grouped`
    position[grouped] = np.arange(n_texts)

    rng = np.random.default_rng(int(training.seed))
    anchor = rng.integers(0, n_texts, size=n_triplets)
    session = owner[anchor]
    s_start, s_size = start[session], size[session]
    # Positive: uniform over the session's other texts — skip over the anchor's slot.
    a_slot = position[anchor] - s_start
    p_slot = rng.integers(0, s_size - 1)
    p_slot += p_slot >= a_slot
    positive = grouped[s_start + p_slot]
    # Negative: uniform over the texts outside the session — skip over the session's block.
    n_pos = rng.integers(0, n_texts - s_size)
    n_pos += np.where(n_pos >= s_start, s_size, 0)
    negative = grouped[n_pos]

    triplets = train_ids[np.stack([anchor, positive, negative], axis=1)].astype(np.int32)
    stats = log.stats()
    summary = {
        "pair_type": PAIR_TYPE,
        "sessions": n_usable,
        "texts": n_all,
        "anchors": n_texts,
        "pairs": int((size * (size - 1) // 2).sum()),
        "triplets": int(n_triplets),
        **heldout_summary(heldout, n_train, n_usable - n_train, validation),
        "event_count": stats.count,
        "max_seq": stats.max_seq,
    }
    prefix = f"{label}: " if label else ""
    held = (f"; held out the latest {n_usable - n_train:,} sessions "
            f"({summary['validation_queries']:,} queries validate, {summary['heldout_queries']:,} test)"
            if n_train < n_usable else "")
    print(f"{prefix}{PAIR_TYPE}: {n_all:,} texts in {n_usable:,} sessions: {n_texts:,} with a "
          f"same-session partner, {summary['pairs']:,} related pairs → {n_triplets:,} training "
          f"triplets{held}", flush=True)
    from oxidize.pairs.history import session_questions

    usable_at = np.flatnonzero(usable)  # usable session i → its number among all sessions
    held_names = [names[s] for s in sorted(usable_at[np.flatnonzero(held_session)].tolist(),
                                           key=lambda s: first_events[s][1])]  # oldest first
    history = session_questions(log, held_names)
    return PairSet(texts=texts, triplets=triplets, stats=summary, heldout=heldout, validation=validation,
                   groups=session_of, history=history)
