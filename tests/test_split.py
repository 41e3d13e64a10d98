"""Tests of the held-out split by time (oxidize.pairs.split), its recipe key and heldout.npy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxidize.errors import EventLogError, OxidizeError, RecipeError
from oxidize.eventlog import Event, EventLogStats
from oxidize.pairs import PairSet, generate_pairs, read_heldout, read_texts, write_pairs
from oxidize.pairs.split import (heldout_count, heldout_groups, pairs_along_edges, pairs_within_groups,
                                 parse_timestamp)
from oxidize.recipe import TrainingConfig, parse_recipe

EPOCH = datetime(2025, 3, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Training:
    """Stand-in for recipe.TrainingConfig."""

    pair_type: str = "same_session"
    pairs: int | None = 300
    event_types: tuple[str, ...] = ("session.decision",)
    min_chars: int = 5
    seed: int = 7
    holdout: float = 0.2
    min_count: int = 2


class MemLog:
    """An in-memory event log: ``(event_type, source_id, data, minutes)`` rows in seq order."""

    def __init__(self, rows, co_changes=None):
        self.path = Path("mem.jsonl")
        self._events = [Event(seq, kind, (EPOCH + timedelta(minutes=minutes)).isoformat(), sid, None, data)
                        for seq, (kind, sid, data, minutes) in enumerate(rows, start=1)]
        self._co_changes = co_changes

    def events(self, types=None):
        return iter([e for e in self._events if types is None or e.event_type in types])

    def stats(self):
        return EventLogStats(len(self._events), len(self._events))

    def co_changes(self):
        return self._co_changes


def session_log(sessions: dict[str, list[str]], minutes: dict[str, int] | None = None) -> MemLog:
    """Sessions in dict order; session ``s`` is dated ``minutes[s]`` (default: its position)."""
    rows = []
    for k, (sid, texts) in enumerate(sessions.items()):
        at = (minutes or {}).get(sid, k)
        rows += [("session.decision", sid, {"content": text}, at) for text in texts]
    return MemLog(rows)


# --- the cut ---------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "holdout", "expected"), [
    (10, 0.0, 0), (10, 0.2, 2), (10, 0.25, 2), (10, 0.26, 3), (10, 0.9, 9), (3, 0.2, 1), (2, 0.2, 0),
    (0, 0.5, 0), (7, 0.5, 3)])
def test_heldout_count_of_single_text_groups_rounds_half_down(n, holdout, expected):
    assert heldout_count([1] * n, holdout) == expected


@pytest.mark.parametrize(("weights", "holdout", "expected"), [
    ([10, 1, 1, 1, 1, 1, 1, 1, 1, 1], 0.2, 0),   # the latest group alone is 53 %: closer to hold out none
    ([1, 1, 10, 1, 1, 1, 1, 1, 1], 0.2, 2),     # 2 of 18 texts (11 %) beats 12 of 18 (67 %)
    ([2, 2, 60, 2, 2], 0.2, 2),
    ([3, 3, 3, 3, 3], 0.4, 2),
])
def test_heldout_count_weighs_groups_by_texts(weights, holdout, expected):
    assert heldout_count(weights, holdout) == expected


def test_timestamps_with_offsets_compare_in_utc():
    # 10:00 at -05:00 is 15:00 UTC: later than 12:00Z although it sorts first as text.
    assert parse_timestamp("2025-01-01T10:00:00-05:00", 1, "log") > parse_timestamp("2025-01-01T12:00:00Z", 2, "log")
    assert parse_timestamp("2025-01-01T12:00:00", 1, "log") == parse_timestamp("2025-01-01T12:00:00+00:00", 1, "log")
    with pytest.raises(EventLogError, match=r"log: row seq=9: timestamp 'yesterday' is not ISO 8601.*holdout: 0"):
        parse_timestamp("yesterday", 9, "log")


def test_latest_groups_are_held_out_by_time_then_seq():
    first = [("2025-01-03T00:00:00Z", 1), ("2025-01-01T00:00:00Z", 2), ("2025-01-02T20:00:00-05:00", 3),
             ("2025-01-03T00:00:00Z", 4), None]
    # Times: g0 = Jan 3, g1 = Jan 1, g2 = Jan 3 01:00 UTC, g3 = Jan 3 (tie with g0, later seq), g4 undated.
    assert heldout_groups(first, 0.2, "log").tolist() == [False, False, True, False, False]
    assert heldout_groups(first, 0.4, "log").tolist() == [False, False, True, True, False]
    assert heldout_groups(first, 0.6, "log").tolist() == [True, False, True, True, False]
    assert heldout_groups(first, 0.8, "log").tolist() == [True, True, True, True, False]
    assert not heldout_groups(first, 0.0, "log").any()


def test_timestamps_are_not_read_without_holdout():
    assert not heldout_groups([("t", 1), ("t", 2)], 0.0, "log").any()
    with pytest.raises(EventLogError, match="seq=1"):
        heldout_groups([("t", 1), ("t", 2)], 0.5, "log")


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.integers(0, 5), min_size=0, max_size=30), seed=st.integers(0, 1000))
def test_pairs_within_groups_matches_brute_force(groups, seed):
    group = np.array(groups, dtype=np.int64)
    held = np.random.default_rng(seed).random(len(groups)) < 0.5
    expected = sorted((i, j) for i in range(len(groups)) for j in range(len(groups))
                      if i != j and held[i] and held[j] and groups[i] == groups[j])
    got = pairs_within_groups(group, held)
    assert got.dtype == np.int32 and got.shape == (len(expected), 2)
    assert [tuple(r) for r in got.tolist()] == expected


@settings(max_examples=60, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=30), seed=st.integers(0, 1000))
def test_pairs_along_edges_matches_brute_force(edges, seed):
    held = np.random.default_rng(seed).random(10) < 0.5
    undirected = {tuple(sorted(e)) for e in edges if e[0] != e[1]}
    expected = sorted({(a, b) for a, b in undirected if held[a] and held[b]}
                      | {(b, a) for a, b in undirected if held[a] and held[b]})
    got = pairs_along_edges(np.array(sorted(undirected), dtype=np.int64).reshape(-1, 2), held)
    assert [tuple(r) for r in got.tolist()] == expected


# --- same_session with a holdout --------------------------------------------------------

def _text_session(sessions):
    owner = {}
    for sid, texts in sessions.items():
        for text in texts:
            owner.setdefault(text, sid)
    return owner


def test_same_session_holds_out_the_latest_sessions():
    sessions = {f"s{k}": [f"session {k} note {i}" for i in range(3)] for k in range(10)}
    # Dict (seq) order is not time order: s0 is the latest session, s5 the second latest.
    minutes = {"s0": 1000, "s5": 900}
    pairset = generate_pairs(session_log(sessions, minutes), Training(holdout=0.2))
    held = {f"session {k} note {i}" for k in (0, 5) for i in range(3)}
    texts = np.array(pairset.texts, dtype=object)
    both = np.concatenate([pairset.heldout, pairset.validation])
    assert set(texts[both.ravel()]) == held
    assert not held & set(texts[pairset.triplets.ravel()])
    # the latest held-out session tests, the older one validates: 3 × 2 ordered pairs each
    assert set(texts[pairset.heldout.ravel()]) == {f"session 0 note {i}" for i in range(3)}
    assert set(texts[pairset.validation.ravel()]) == {f"session 5 note {i}" for i in range(3)}
    assert len(pairset.heldout) == len(pairset.validation) == 3 * 2
    owner = _text_session(sessions)
    assert all(owner[texts[q]] == owner[texts[r]] and q != r for q, r in both.tolist())
    assert pairset.stats["train_groups"] == 8 and pairset.stats["heldout_groups"] == 2
    assert pairset.stats["heldout_queries"] == 3 and pairset.stats["validation_queries"] == 3
    assert pairset.stats["anchors"] == 24
    assert pairset.stats["texts"] == 30 and len(pairset.texts) == 30  # held-out texts stay in the table


def test_text_copied_into_a_held_out_session_stays_with_its_first_session():
    shared = "a bullet copied into a later session"
    sessions = {"old": ["old note one", shared, "old note two"], "a": ["a note one", "a note two"],
                "b": ["b note one", "b note two"], "new": [shared, "new note one", "new note two"]}
    pairset = generate_pairs(session_log(sessions), Training(holdout=0.25))  # holds out "new"
    texts = np.array(pairset.texts, dtype=object)
    heldout_texts = set(texts[pairset.heldout.ravel()])
    assert heldout_texts == {"new note one", "new note two"}
    assert shared in set(texts[pairset.triplets.ravel()])


def test_holdout_zero_gives_an_empty_heldout_file(tmp_path):
    sessions = {f"s{k}": [f"session {k} note {i}" for i in range(3)] for k in range(5)}
    pairset = generate_pairs(session_log(sessions), Training(holdout=0.0))
    assert pairset.heldout.shape == (0, 2)
    assert {k: pairset.stats[k] for k in ("train_groups", "heldout_groups", "heldout_queries")} == {
        "train_groups": 5, "heldout_groups": 0, "heldout_queries": 0}
    write_pairs(pairset, tmp_path)
    back = read_heldout(tmp_path / "heldout.npy")
    assert back.shape == (0, 2) and back.dtype == np.int32


def test_holdout_changes_triplets_but_not_the_texts_table(tmp_path):
    sessions = {f"s{k}": [f"session {k} note {i}" for i in range(2 + k % 3)] for k in range(12)}
    for h in (0.0, 0.3):
        write_pairs(generate_pairs(session_log(sessions), Training(holdout=h)), tmp_path / str(h))
    assert (tmp_path / "0.0" / "texts.jsonl").read_bytes() == (tmp_path / "0.3" / "texts.jsonl").read_bytes()
    assert read_heldout(tmp_path / "0.3" / "heldout.npy").shape[0] > 0


def test_too_large_a_holdout_is_a_clear_error():
    sessions = {f"s{k}": [f"session {k} note {i}" for i in range(3)] for k in range(3)}
    with pytest.raises(EventLogError, match=r"only 1 of 3 usable session\(s\).*lower training.holdout"):
        generate_pairs(session_log(sessions), Training(holdout=0.6))
    with pytest.raises(OxidizeError, match="training.holdout is 0.95"):
        generate_pairs(session_log(sessions), Training(holdout=0.95))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 5), min_size=4, max_size=14),
       times=st.lists(st.integers(0, 50), min_size=14, max_size=14),
       copies=st.lists(st.tuples(st.integers(0, 13), st.integers(0, 13)), max_size=4),
       holdout=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5]), seed=st.integers(0, 2**16))
def test_same_session_never_leaks(sizes, times, copies, holdout, seed):
    sessions = {f"s{k}": [f"text {k}-{i}" for i in range(n)] for k, n in enumerate(sizes)}
    for src, dst in copies:  # copy a text of one session into another (a shared bullet)
        if src < len(sizes) and dst < len(sizes) and sizes[src]:
            sessions[f"s{dst}"].append(f"text {src}-0")
    log = session_log(sessions, {f"s{k}": times[k] for k in range(len(sizes))})
    try:
        pairset = generate_pairs(log, Training(holdout=holdout, seed=seed, pairs=200))
    except EventLogError:
        return
    texts = np.array(pairset.texts, dtype=object)
    trained, held = set(pairset.triplets.ravel().tolist()), set(pairset.heldout.ravel().tolist())
    assert not trained & held
    owner = _text_session(sessions)
    sess = np.array([owner[t] for t in texts], dtype=object)
    a, p, n = pairset.triplets.T
    assert (sess[a] == sess[p]).all() and (sess[a] != sess[n]).all()
    if len(pairset.heldout):
        q, r = pairset.heldout.T
        assert (sess[q] == sess[r]).all() and (q != r).all()
        # Every held-out session is at least as late as every training session.
        key = {s: (times[int(s[1:])], min(i for i, t in enumerate(texts) if owner[t] == s)) for s in set(sess)}
        latest_train = max(key[s] for s in set(sess[list(trained)]))
        assert all(key[s] >= latest_train for s in set(sess[list(held)]))


# --- files -----------------------------------------------------------------------------

def test_heldout_file_roundtrip_and_errors(tmp_path):
    write_pairs(PairSet(["a", "b", "c"], np.zeros((1, 3), np.int32), {}, np.array([[1, 2], [2, 1]])), tmp_path)
    back = read_heldout(tmp_path / "heldout.npy")
    assert back.dtype == np.int32 and back.tolist() == [[1, 2], [2, 1]]
    assert read_texts(tmp_path / "texts.jsonl") == ["a", "b", "c"]
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), np.int32))
    with pytest.raises(OxidizeError, match=r"held-out pairs have shape \(3, 3\)"):
        read_heldout(tmp_path / "bad.npy")
    with pytest.raises(OxidizeError, match="cannot read held-out pairs"):
        read_heldout(tmp_path / "missing.npy")
    with pytest.raises(OxidizeError, match=r"held-out pairs for .* have shape \(3,\)"):
        write_pairs(PairSet(["a"], np.zeros((1, 3), np.int32), {}, np.array([1, 2, 3])), tmp_path)


# --- the recipe keys -------------------------------------------------------------------

def _training(block: dict | None) -> TrainingConfig:
    data = {"version": 1, "projections": {"semantic": {} if block is None else {"training": block}}}
    return parse_recipe(data, Path("/r/oxidize.yaml"), "r").projection("semantic").training


def test_holdout_and_min_count_defaults_and_values():
    assert (_training(None).holdout, _training(None).min_count) == (0.2, 2)
    assert _training({"holdout": 0}).holdout == 0.0 and isinstance(_training({"holdout": 0}).holdout, float)
    assert _training({"holdout": 0.9}).holdout == 0.9
    assert _training({"min_count": 1}).min_count == 1


@pytest.mark.parametrize(("block", "message"), [
    ({"holdout": 0.95}, "training.holdout: expected a fraction from 0 to 0.9"),
    ({"holdout": -0.1}, "training.holdout: expected a number >= 0"),
    ({"holdout": "20%"}, "training.holdout: expected a number"),
    ({"holdout": True}, "training.holdout: expected a number"),
    ({"min_count": 0}, "training.min_count: expected an integer >= 1"),
    ({"hold_out": 0.1}, "did you mean 'holdout'"),
])
def test_bad_holdout_and_min_count(block, message):
    with pytest.raises(RecipeError, match=message):
        _training(block)


def test_holdout_is_a_pair_key_not_a_training_key():
    def settings(block):
        data = {"version": 1, "projections": {"semantic": {"training": block}}}
        recipe = parse_recipe(data, Path("/r/oxidize.yaml"), "r")
        return recipe.pair_settings("semantic"), recipe.train_settings("semantic")

    pairs, train = settings({"holdout": 0.2, "min_count": 2})
    assert pairs["projections.semantic.training.holdout"] == 0.2
    assert pairs["projections.semantic.training.min_count"] == 2
    pairs_b, train_b = settings({"holdout": 0.3, "min_count": 3})
    assert pairs_b != pairs and train_b == train
    assert settings({})[0] == pairs  # writing the default out changes nothing
