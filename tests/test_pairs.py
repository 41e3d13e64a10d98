"""Tests of oxidize.pairs: the same_session generator, the registry and the file format."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from eventlog_factory import make_sqlite_eventlog
from hypothesis import given, settings
from hypothesis import strategies as st

from oxidize.errors import EventLogError, OxidizeError
from oxidize.eventlog import Event, EventLogStats, open_eventlog
from oxidize.pairs import (PAIR_TYPES, PairSet, default_pair_count, generate_pairs, read_texts,
                           read_triplets, write_pairs)

REPO = Path(__file__).resolve().parents[1]
OBS = ("session.decision", "session.pattern", "session.observation")


@dataclass(frozen=True)
class Training:
    """Stand-in for recipe.TrainingConfig with the same attribute names."""

    pair_type: str = "same_session"
    pairs: int | None = None
    event_types: tuple[str, ...] = OBS
    min_chars: int = 10
    learning_rate: float = 0.001
    margin: float = 0.2
    seed: int = 42
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0


class FakeLog:
    """An in-memory EventLog for fast property tests: sessions → decision events."""

    def __init__(self, sessions: dict[str, list[str]], event_type: str = "session.decision"):
        self.path = Path("fake.jsonl")
        self._events = [Event(i + 1, event_type, "t", sid, None, {"content": text})
                        for i, (sid, text) in enumerate((s, t) for s, texts in sessions.items() for t in texts)]

    def events(self, types=None):
        return iter([e for e in self._events if types is None or e.event_type in types])

    def stats(self):
        return EventLogStats(len(self._events), len(self._events))


def _sessions(n_sessions: int, per: int) -> dict[str, list[str]]:
    return {f"s{s}": [f"session {s} observation number {i}" for i in range(per)] for s in range(n_sessions)}


def _owner_of(sessions: dict[str, list[str]]) -> dict[str, str]:
    owner: dict[str, str] = {}
    for sid, texts in sessions.items():
        for text in texts:
            owner.setdefault(text.strip(), sid)
    return owner


def _check_invariants(pairset: PairSet, sessions: dict[str, list[str]]) -> None:
    texts, trip = pairset.texts, pairset.triplets
    owner = _owner_of(sessions)
    assert trip.dtype == np.int32 and trip.ndim == 2 and trip.shape[1] == 3
    assert len(set(texts)) == len(texts)
    assert trip.min() >= 0 and trip.max() < len(texts)
    a, p, n = trip.T
    assert (a != p).all() and (a != n).all() and (p != n).all()
    texts_arr = np.array(texts, dtype=object)
    assert (texts_arr[a] != texts_arr[p]).all() and (texts_arr[a] != texts_arr[n]).all()
    sess = np.array([owner[t] for t in texts], dtype=object)
    assert (sess[a] == sess[p]).all()
    assert (sess[a] != sess[n]).all()


# --- same_session ----------------------------------------------------------------------

def test_invariants_on_sqlite_log(tmp_path, capsys):
    sessions = {f"s{s}": [f"session {s} note {i} about some topic" for i in range(2 + s % 5)] for s in range(12)}
    db = make_sqlite_eventlog(tmp_path / "e.db", sessions, commits=[("msg", ["a"])])
    with open_eventlog(db) as log:
        pairset = generate_pairs(log, Training(), label="r:p")
    _check_invariants(pairset, sessions)
    n_texts = sum(len(t) for t in sessions.values())
    assert pairset.texts == [t for texts in sessions.values() for t in texts]  # first appearance by seq
    n_pairs = sum(len(t) * (len(t) - 1) // 2 for t in sessions.values())
    assert pairset.stats == {"pair_type": "same_session", "sessions": 12, "texts": n_texts, "anchors": n_texts,
                             "pairs": n_pairs, "triplets": 1000, "train_groups": 12, "heldout_groups": 0,
                             "heldout_queries": 0, "heldout_pairs": 0, "validation_queries": 0,
                             "validation_pairs": 0, "history_questions": 0,
                             "event_count": n_texts + 1, "max_seq": n_texts + 1}
    assert pairset.heldout.shape == (0, 2)
    assert capsys.readouterr().out == (f"r:p: same_session: {n_texts} texts in 12 sessions: {n_texts} with a "
                                       f"same-session partner, {n_pairs} related pairs → 1,000 "
                                       f"training triplets\n"
                                       f"r:p: no history questions (no session held out)\n")


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=6), min_size=2, max_size=12),
       pairs=st.integers(min_value=1, max_value=300), seed=st.integers(min_value=0, max_value=2**32))
def test_invariants_property(sizes, pairs, seed):
    sessions = {f"s{k}": [f"text {k}-{i} long enough" for i in range(n)] for k, n in enumerate(sizes)}
    if sum(1 for n in sizes if n >= 2) < 2:
        with pytest.raises(EventLogError, match="no usable sessions"):
            generate_pairs(FakeLog(sessions), Training(pairs=pairs, seed=seed))
        return
    pairset = generate_pairs(FakeLog(sessions), Training(pairs=pairs, seed=seed))
    assert len(pairset.triplets) == pairs
    _check_invariants(pairset, {k: v for k, v in sessions.items() if len(v) >= 2})
    assert len(pairset.texts) == sum(n for n in sizes if n >= 2)


def test_every_text_is_used_as_anchor_and_as_positive():
    sessions = {"a": ["alpha one text", "alpha two text"], "b": ["beta one text", "beta two text", "beta three text"]}
    pairset = generate_pairs(FakeLog(sessions), Training(pairs=2000))
    assert set(pairset.triplets[:, 0]) == set(range(5))
    assert set(pairset.triplets[:, 1]) == set(range(5))
    assert set(pairset.triplets[:, 2]) == set(range(5))


def test_duplicate_text_belongs_to_first_session():
    shared = "a bullet copied into two sessions"
    sessions = {"a": ["alpha one text", shared], "b": [shared, "beta one text", "beta two text"],
                "c": ["gamma one text", "gamma two text", "gamma one text"]}
    pairset = generate_pairs(FakeLog(sessions), Training(pairs=3000))
    assert pairset.texts == ["alpha one text", shared, "beta one text", "beta two text",
                             "gamma one text", "gamma two text"]
    _check_invariants(pairset, sessions)
    # A session left with one text after deduplication is not usable.
    only_dupes = {"a": ["alpha one text", "alpha two text"], "b": ["alpha one text", "beta one text"],
                  "c": ["gamma one text", "gamma two text"]}
    pairset = generate_pairs(FakeLog(only_dupes), Training(pairs=100))
    assert pairset.stats["sessions"] == 2 and "beta one text" not in pairset.texts


def test_deterministic_byte_identical(tmp_path):
    sessions = _sessions(30, 5)
    db = make_sqlite_eventlog(tmp_path / "e.db", sessions)
    for out in ("one", "two"):
        with open_eventlog(db) as log:
            write_pairs(generate_pairs(log, Training()), tmp_path / out)
    for name in ("texts.jsonl", "triplets.npy", "pairs.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_seed_and_count_change_triplets_not_texts(tmp_path):
    log = FakeLog(_sessions(20, 4))
    base = generate_pairs(log, Training(seed=1))
    reseeded = generate_pairs(log, Training(seed=2))
    more = generate_pairs(log, Training(pairs=5000))
    assert not np.array_equal(base.triplets, reseeded.triplets)
    assert len(more.triplets) == 5000
    written = []
    for k, pairset in enumerate((base, reseeded, more)):
        write_pairs(pairset, tmp_path / str(k))
        written.append((tmp_path / str(k) / "texts.jsonl").read_bytes())
    assert written[0] == written[1] == written[2]


@pytest.mark.parametrize(("n_texts", "expected"), [(2, 1000), (99, 1000), (100, 1000), (150, 1500),
                                                   (20_000, 200_000), (25_000, 200_000)])
def test_default_pair_count(n_texts, expected):
    assert default_pair_count(n_texts) == expected


def test_automatic_count_is_ten_per_text():
    pairset = generate_pairs(FakeLog(_sessions(50, 3)), Training(pairs=None))
    assert len(pairset.triplets) == 1500 and pairset.stats["triplets"] == 1500


def test_min_chars_counts_stripped_characters():
    sessions = {"a": ["x" * 10, "y" * 11, "  " + "z" * 10 + "  ", "  padded text long  "],
                "b": ["b" * 11, "c" * 12]}
    pairset = generate_pairs(FakeLog(sessions), Training(min_chars=10, pairs=10))
    assert pairset.texts == ["y" * 11, "padded text long", "b" * 11, "c" * 12]


def test_event_types_filter_and_non_string_content(tmp_path):
    db = make_sqlite_eventlog(tmp_path / "e.db", {"a": ["a decision long enough", "another decision here"],
                                                  "b": ["b decision long enough", "b second decision"]})
    make_sqlite_eventlog(db, {"a": ["a pattern that is long"], "c": ["c pattern one is long", "c pattern two too"]},
                         event_type="session.pattern")
    make_sqlite_eventlog(db, {"c": ["c work item long text"]}, event_type="session.work")
    conn = __import__("sqlite3").connect(db)
    conn.execute("INSERT INTO eventlog (event_type, timestamp, source_id, data) VALUES "
                 "('session.decision', 't', 'c', '{\"content\": 12345678901234}')")
    conn.commit()
    conn.close()
    with open_eventlog(db) as log:
        decisions = generate_pairs(log, Training(event_types=("session.decision",), pairs=10))
        both = generate_pairs(log, Training(event_types=("session.decision", "session.pattern"), pairs=10))
    assert decisions.stats["sessions"] == 2 and len(decisions.texts) == 4
    assert both.stats["sessions"] == 3 and len(both.texts) == 7
    assert "c work item long text" not in both.texts


def test_no_usable_sessions():
    with pytest.raises(EventLogError) as info:
        generate_pairs(FakeLog({"a": ["one long text here", "two long text here"], "b": ["lonely long text"]}),
                       Training(min_chars=5))
    message = str(info.value)
    assert "no usable sessions" in message and "1 session(s) have ≥2 observations" in message
    assert "session.decision, session.pattern, session.observation" in message and "longer than 5 chars" in message
    with pytest.raises(EventLogError, match="0 session"):
        generate_pairs(FakeLog(_sessions(5, 3)), Training(min_chars=1000))


def test_bad_pairs_count():
    with pytest.raises(OxidizeError, match="training.pairs is 0"):
        generate_pairs(FakeLog(_sessions(3, 3)), Training(pairs=0))


# --- registry --------------------------------------------------------------------------

def test_registry_matches_the_recipe_choices():
    from oxidize.recipe import PAIR_TYPES as RECIPE_PAIR_TYPES

    assert set(PAIR_TYPES) == set(RECIPE_PAIR_TYPES)
    assert all(not g.__name__.startswith("not_implemented") for g in PAIR_TYPES.values())


def test_unknown_pair_type():
    with pytest.raises(OxidizeError, match="unknown pair_type `same_sesion`; known: .*same_session"):
        generate_pairs(FakeLog(_sessions(3, 3)), Training(pair_type="same_sesion"))


# --- files -----------------------------------------------------------------------------

def test_write_read_roundtrip(tmp_path):
    texts = ["plain", "ünïcode ✓", "line\nbreak", "tab\tand \"quotes\"", "sep\u2028arator\u0085",
             "lone \ud800 surrogate", ""]
    triplets = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64)
    write_pairs(PairSet(texts, triplets, {"pair_type": "x", "texts": 7}), tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["groups.npy", "heldout.npy", "history_queries.json", "pairs.json",
                                                     "related.npy", "texts.jsonl", "triplets.npy", "validation.npy"]
    assert read_texts(out / "texts.jsonl") == texts
    assert "ünïcode ✓" in (out / "texts.jsonl").read_text(encoding="utf-8")  # ensure_ascii=False
    back = read_triplets(out / "triplets.npy")
    assert back.dtype == np.int32 and back.tolist() == triplets.tolist()
    assert json.loads((out / "pairs.json").read_text()) == {"pair_type": "x", "texts": 7}


def test_write_replaces_existing_and_leaves_no_temporaries(tmp_path):
    write_pairs(PairSet(["a", "b"], np.zeros((1, 3), np.int32), {}), tmp_path)
    write_pairs(PairSet(["c"], np.zeros((2, 3), np.int32), {"n": 1}), tmp_path)
    assert read_texts(tmp_path / "texts.jsonl") == ["c"]
    assert read_triplets(tmp_path / "triplets.npy").shape == (2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups.npy", "heldout.npy", "history_queries.json",
                                                          "pairs.json", "related.npy", "texts.jsonl",
                                                          "triplets.npy", "validation.npy"]


def test_read_errors(tmp_path):
    bad_texts = tmp_path / "texts.jsonl"
    bad_texts.write_text('"ok"\n{"not": "a string"}\n', encoding="utf-8")
    with pytest.raises(OxidizeError, match=r"texts.jsonl: line 2: found a JSON dict, expected a string"):
        read_texts(bad_texts)
    bad_texts.write_text('"ok"\nnot json\n', encoding="utf-8")
    with pytest.raises(OxidizeError, match="line 2: not valid JSON"):
        read_texts(bad_texts)
    wrong_shape = tmp_path / "t.npy"
    np.save(wrong_shape, np.zeros((4, 2), np.int32))
    with pytest.raises(OxidizeError, match=r"shape \(4, 2\)"):
        read_triplets(wrong_shape)
    pickled = tmp_path / "p.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(OxidizeError, match="cannot read triplets"):
        read_triplets(pickled)


# --- the example event log -------------------------------------------------------------

def _load_make_events():
    spec = importlib.util.spec_from_file_location("make_events", REPO / "recipes" / "example" / "make_events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_events_file_is_regenerable():
    committed = (REPO / "recipes" / "example" / "events.jsonl").read_text(encoding="utf-8")
    assert _load_make_events().render() == committed


def test_example_events_make_good_pairs():
    with open_eventlog(REPO / "recipes" / "example" / "events.jsonl") as log:
        events = list(log.events())
        pairset = generate_pairs(log, replace(Training(), min_chars=20))
    observations = [e for e in events if e.event_type in OBS]
    assert all(200 <= len(e.data["content"]) <= 400 for e in observations)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert {e.event_type for e in events} >= {"session.started", "git.commit", *OBS}
    assert pairset.stats["sessions"] == 120
    sessions: dict[str, list[str]] = {}
    for e in observations:
        sessions.setdefault(e.source_id, []).append(e.data["content"])
    assert all(4 <= len(v) <= 8 for v in sessions.values())
    _check_invariants(pairset, sessions)
