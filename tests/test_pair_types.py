"""Tests of the graph pair types: co_changed, same_commit, caller_callee (and their sampler)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from eventlog_factory import make_sqlite_eventlog
from hypothesis import given, settings
from hypothesis import strategies as st

from oxidize.errors import EventLogError
from oxidize.eventlog import open_eventlog
from oxidize.pairs import generate_pairs, write_pairs
from oxidize.pairs.caller_callee import describe_function
from oxidize.pairs.co_changed import count_from_commits, describe_file
from oxidize.pairs.graph import sample_triplets
from test_split import MemLog

DEV_DB = Path(__file__).resolve().parents[2] / "shared" / "data" / "patina-dev.db"


@dataclass(frozen=True)
class Training:
    """Stand-in for recipe.TrainingConfig."""

    pair_type: str = "co_changed"
    pairs: int | None = 400
    event_types: tuple[str, ...] = ("session.decision",)
    min_chars: int = 5
    seed: int = 3
    holdout: float = 0.0
    min_count: int = 2


def commit_rows(commits, minutes=None):
    """``git.commit`` rows for MemLog: commits are ``(message, files)``; dated by position or ``minutes``."""
    return [("git.commit", f"{k + 1:040x}", {"message": m, "author": "t", "files": list(f)},
             k if minutes is None else minutes[k]) for k, (m, f) in enumerate(commits)]


def _check_shape(pairset):
    trip = pairset.triplets
    assert trip.dtype == np.int32 and trip.ndim == 2 and trip.shape[1] == 3
    assert len(set(pairset.texts)) == len(pairset.texts)
    if len(trip):
        assert trip.min() >= 0 and trip.max() < len(pairset.texts)
        a, p, n = trip.T
        assert (a != p).all() and (a != n).all() and (p != n).all()


def _no_leak(pairset):
    trained = set(pairset.triplets.ravel().tolist())
    held = set(pairset.heldout.ravel().tolist())
    validating = set(pairset.validation.ravel().tolist())
    assert not trained & held and not trained & validating and not held & validating


# --- co_changed ------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "text"), [
    ("src/commands/init.rs", "file src/commands/init.rs: commands init, rust source"),
    ("src/commands/scrape/mod.rs", "file src/commands/scrape/mod.rs: commands scrape module, rust module root"),
    ("Cargo.toml", "file Cargo.toml: cargo, rust package manifest"),
    ("docs/golden-path_v2.md", "file docs/golden-path_v2.md: docs golden path v2, markdown document"),
    ("web/src/MyWidget.tsx", "file web/src/MyWidget.tsx: web my widget, typescript react component"),
    ("tools/run", "file tools/run: tools run, file"),
    (".gitignore", "file .gitignore: gitignore, git ignore rules"),
    ("a/b.weird", "file a/b.weird: a b, weird file"),
])
def test_describe_file(path, text):
    assert describe_file(path) == text


def _co_counts(commits, limit=50):
    counts = Counter()
    for _, files in commits:
        files = sorted(set(files))
        if len(files) <= limit:
            counts.update(itertools.combinations(files, 2))
    return counts


COMMITS = [
    ("feat: parser", ["src/parse.rs", "src/lex.rs", "tests/parse.rs"]),
    ("fix: parser", ["src/parse.rs", "src/lex.rs"]),
    ("feat: cli", ["src/cli.rs", "src/main.rs"]),
    ("fix: cli flags", ["src/cli.rs", "src/main.rs", "README.md"]),
    ("docs: guide", ["README.md", "docs/guide.md"]),
    ("docs again", ["README.md", "docs/guide.md"]),
    ("huge reformat", [f"src/f{i}.rs" for i in range(51)] + ["src/parse.rs", "src/cli.rs"]),
    ("store", ["src/db.rs", "src/schema.rs"]),
    ("store again", ["src/db.rs", "src/schema.rs", "src/parse.rs"]),
]


def test_count_from_commits_skips_big_commits_and_matches_brute_force():
    rows = count_from_commits([(f, "t", i) for i, (_, f) in enumerate(COMMITS)])
    assert {(a, b): n for a, b, n in rows} == dict(_co_counts(COMMITS))
    assert all(a < b for a, b, _ in rows) and rows == sorted(rows)
    assert not any("src/f0.rs" in (a, b) for a, b, _ in rows)


def test_co_changed_invariants(capsys):
    counts = _co_counts(COMMITS)
    pairset = generate_pairs(MemLog(commit_rows(COMMITS)), Training(), label="r:temporal")
    _check_shape(pairset)
    files = [t.split(":")[0].removeprefix("file ") for t in pairset.texts]
    assert files == sorted(files)
    strong = {pair for pair, n in counts.items() if n >= 2}
    assert set(files) == {f for pair in strong for f in pair}
    for a, p, n in pairset.triplets.tolist():
        assert tuple(sorted((files[a], files[p]))) in strong
        assert counts[tuple(sorted((files[a], files[n])))] == 0
    assert pairset.stats["source"] == "git.commit files" and pairset.stats["pairs"] == len(strong)
    assert len(pairset.triplets) == 400
    out = capsys.readouterr().out
    assert len(strong) == 4
    assert out == ("r:temporal: co_changed: 8 files (git.commit files, min_count 2): 8 with a related one, "
                   "4 related pairs → 400 training triplets; held out the latest 0 files "
                   "(0 queries validate, 0 test)\n"
                   "r:temporal: no history questions (nothing held out: training.holdout is 0)\n")


def test_co_changed_table_and_commits_agree(tmp_path):
    """A log with only the co_changes table and a log with only the commits that made it build
    the same pairs (nothing held out: a table cannot date its files)."""
    table = [(a, b, n) for (a, b), n in _co_counts(COMMITS).items()]
    only_table = make_sqlite_eventlog(tmp_path / "t.db", {}, commits=[], co_changes=table)
    only_commits = make_sqlite_eventlog(tmp_path / "n.db", {}, commits=COMMITS)
    for path, name in ((only_table, "t"), (only_commits, "n")):
        with open_eventlog(path) as log:
            write_pairs(generate_pairs(log, Training(holdout=0)), tmp_path / name)
    for file in ("texts.jsonl", "triplets.npy", "heldout.npy"):
        assert (tmp_path / "t" / file).read_bytes() == (tmp_path / "n" / file).read_bytes()
    stats = [json.loads((tmp_path / n / "pairs.json").read_text()) for n in ("t", "n")]
    assert (stats[0]["source"], stats[1]["source"]) == ("co_changes table", "git.commit files")


def test_co_changed_counts_the_commits_where_the_log_has_them(tmp_path):
    """The commits, not a co_changes table beside them: only per-commit counts can leave the
    commits after the held-out cut out of training."""
    table = [("x/a.py", "x/b.py", 5), ("y/c.py", "y/d.py", 3)]
    db = make_sqlite_eventlog(tmp_path / "t.db", {}, commits=COMMITS, co_changes=table)
    with open_eventlog(db) as log:
        pairset = generate_pairs(log, Training(pairs=50, holdout=0))
    assert pairset.stats["source"] == "git.commit files"
    assert {t.split(":")[0].removeprefix("file ") for t in pairset.texts} == \
        {f for (a, b), n in _co_counts(COMMITS).items() if n >= 2 for f in (a, b)}


def test_co_changed_table_relations(tmp_path):
    table = [("x/a.py", "x/b.py", 5), ("y/c.py", "y/d.py", 3), ("x/a.py", "y/c.py", 1)]
    db = make_sqlite_eventlog(tmp_path / "t.db", {}, commits=[], co_changes=table)
    with open_eventlog(db) as log:
        pairset = generate_pairs(log, Training(pairs=50))
    assert [t.split(":")[0] for t in pairset.texts] == ["file x/a.py", "file x/b.py", "file y/c.py", "file y/d.py"]
    # a–c changed together once: related, so never a negative of each other.
    for a, _, n in pairset.triplets.tolist():
        assert {a, n} != {0, 2}


def test_co_changed_errors():
    with pytest.raises(EventLogError, match="no co-changes for co_changed pairs.*no `co_changes` table"):
        generate_pairs(MemLog([("session.decision", "s", {"content": "x"}, 0)]), Training())
    with pytest.raises(EventLogError, match=r"at least 9 times .*the most is 2.*lower training.min_count"):
        generate_pairs(MemLog(commit_rows(COMMITS)), Training(min_count=9))


def test_co_changed_holdout_holds_out_newest_files():
    # Files a, b are old; c, d appear only in the last commits.
    commits = [("one", ["a.rs", "b.rs"]), ("two", ["a.rs", "b.rs", "e.rs"]), ("three", ["e.rs", "f.rs"]),
               ("four", ["e.rs", "f.rs"]), ("five", ["c.rs", "d.rs"]), ("six", ["c.rs", "d.rs"])]
    pairset = generate_pairs(MemLog(commit_rows(commits)), Training(holdout=0.34))  # 2 of 6 files
    texts = [t.split(":")[0].removeprefix("file ") for t in pairset.texts]
    held = {texts[i] for i in pairset.heldout.ravel()}
    assert held == {"c.rs", "d.rs"}
    assert sorted(map(tuple, pairset.heldout.tolist())) == [(texts.index("c.rs"), texts.index("d.rs")),
                                                            (texts.index("d.rs"), texts.index("c.rs"))]
    _no_leak(pairset)
    assert pairset.stats["heldout_groups"] == 2 and pairset.stats["heldout_queries"] == 2


# --- same_commit -----------------------------------------------------------------------

def test_same_commit_invariants():
    commits = COMMITS + [("feat: parser", ["src/parse.rs", "src/lex.rs"]),  # duplicate message: dropped
                         ("tiny", ["src/parse.rs", "src/lex.rs"])]           # too short: dropped
    pairset = generate_pairs(MemLog(commit_rows(commits)), Training(pair_type="same_commit", min_chars=4))
    _check_shape(pairset)
    files = {m: set(f) for m, f in reversed(COMMITS)}  # first commit with the message wins
    assert pairset.texts == ["feat: parser", "fix: parser", "feat: cli", "fix: cli flags", "docs: guide",
                             "docs again", "store", "store again"]
    for a, p, n in pairset.triplets.tolist():
        ta, tp, tn = (pairset.texts[i] for i in (a, p, n))
        assert len(files[ta] & files[tp]) >= 2
        assert not files[ta] & files[tn]
    assert pairset.stats["pairs"] == 4  # parser, cli, docs, store pairs
    negatives = {pairset.texts[n] for a, _, n in pairset.triplets.tolist() if pairset.texts[a] == "docs: guide"}
    assert "fix: cli flags" not in negatives  # shares README.md: weakly related, not a negative


def test_same_commit_holdout_and_errors():
    commits = [(f"change {k} to module {k % 3}", [f"m{k % 3}/a.rs", f"m{k % 3}/b.rs"]) for k in range(12)]
    pairset = generate_pairs(MemLog(commit_rows(commits)), Training(pair_type="same_commit", holdout=0.25))
    trained = {pairset.texts[i] for i in pairset.triplets.ravel()}
    assert trained == {f"change {k} to module {k % 3}" for k in range(9)}  # 9, 10, 11 are the latest
    assert len(pairset.heldout) == 0  # 9, 10, 11 touch three different modules: no relation inside
    assert pairset.stats["heldout_groups"] == 3 and pairset.stats["heldout_queries"] == 0
    _no_leak(pairset)
    more = [(f"change {k} to module {k % 3}", [f"m{k % 3}/a.rs", f"m{k % 3}/b.rs"]) for k in range(18)]
    most = generate_pairs(MemLog(commit_rows(more)), Training(pair_type="same_commit", holdout=0.5))
    # 9..17 held out: 14..17 test (the latest, about half), 9..13 validate; a relation across
    # the two parts (11-14, 12-15, 13-16) belongs to neither side
    name = lambda pairs: {(most.texts[q].split()[1], most.texts[r].split()[1]) for q, r in pairs.tolist()}  # noqa: E731
    assert name(most.heldout) == {("14", "17"), ("17", "14")}
    assert name(most.validation) == {("9", "12"), ("12", "9"), ("10", "13"), ("13", "10")}
    _no_leak(most)
    with pytest.raises(EventLogError, match="no usable commits for same_commit"):
        generate_pairs(MemLog([]), Training(pair_type="same_commit"))
    with pytest.raises(EventLogError, match="share 3 or more files.*most shared is 2"):
        generate_pairs(MemLog(commit_rows(commits)), Training(pair_type="same_commit", min_count=3))


# --- caller_callee ---------------------------------------------------------------------

def _calls(edges, texts=None, functions=()):
    rows = [("code.function", "f", dict(fn), 0) for fn in functions]
    for k, (a, b) in enumerate(edges):
        data = {"caller": a, "callee": b}
        data.update((texts or {}).get((a, b), {}))
        rows.append(("code.call", "c", data, k + 1))
    return MemLog(rows)


def test_describe_function():
    assert describe_function("commands::init::run") == "function commands::init::run (commands init run)"
    assert describe_function("parseArgs", "fn parseArgs(a: &[String])", "Reads flags.", "src/cli.rs") == (
        "function parseArgs (parse args)\nfn parseArgs(a: &[String])\nReads flags.\nin src/cli.rs")


def test_caller_callee_invariants_and_texts():
    edges = [("main", "cli::parse"), ("cli::parse", "cli::flag"), ("main", "db::open"), ("db::open", "db::migrate"),
             ("db::migrate", "db::open"), ("main", "main"), ("ui::draw", "ui::text"), ("ui::text", "ui::font")]
    functions = [{"name": "db::open", "signature": "fn open(path: &Path) -> Db", "doc": "Opens the store."}]
    texts = {("ui::draw", "ui::text"): {"caller_text": "fn draw(frame)"}}
    pairset = generate_pairs(_calls(edges, texts, functions), Training(pair_type="caller_callee"))
    _check_shape(pairset)
    name = {}
    for i, text in enumerate(pairset.texts):
        name[i] = "ui::draw" if text == "fn draw(frame)" else text.split()[1]
    assert pairset.texts[3] == "function db::open (db open)\nfn open(path: &Path) -> Db\nOpens the store."
    assert [name[i] for i in range(len(pairset.texts))] == [
        "main", "cli::parse", "cli::flag", "db::open", "db::migrate", "ui::draw", "ui::text", "ui::font"]
    linked = {tuple(sorted(e)) for e in edges if e[0] != e[1]}
    for a, p, n in pairset.triplets.tolist():
        assert tuple(sorted((name[a], name[p]))) in linked
        assert tuple(sorted((name[a], name[n]))) not in linked
    assert pairset.stats["call_edges"] == 6 and pairset.stats["functions"] == 8


def test_caller_callee_without_code_events_is_a_clear_error():
    log = MemLog([("session.decision", "s", {"content": "a note"}, 0)] + commit_rows(COMMITS))
    with pytest.raises(EventLogError, match=r"mem.jsonl has no code.call events; caller_callee needs code.call "
                                            r"events with data \{\"caller\""):
        generate_pairs(log, Training(pair_type="caller_callee"))
    with pytest.raises(EventLogError, match="none of its 2 code.call events has string"):
        generate_pairs(_calls([("a", "a"), ("b", 3)]), Training(pair_type="caller_callee"))


def test_caller_callee_holdout():
    edges = [(f"m{k}::f", f"m{k}::g") for k in range(6)]  # six separate components, in time order
    pairset = generate_pairs(_calls(edges), Training(pair_type="caller_callee", holdout=0.34))  # 4 of 12
    def held(pairs):
        return sorted(pairset.texts[i].split()[1] for i in set(pairs.ravel().tolist()))

    # m_k::f and m_k::g are born in one call event: one moment, one side of the cut
    assert held(pairset.heldout) == ["m5::f", "m5::g"] and len(pairset.heldout) == 2
    assert held(pairset.validation) == ["m4::f", "m4::g"] and len(pairset.validation) == 2
    _no_leak(pairset)


# --- the shared sampler ----------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 15), pos=st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), max_size=25),
       rel=st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), max_size=25),
       seed=st.integers(0, 2**16), mask_seed=st.integers(0, 2**16))
def test_sampler_invariants(n, pos, rel, seed, mask_seed):
    pos = np.array([(a, b) for a, b in pos if a < n and b < n], dtype=np.int64).reshape(-1, 2)
    rel = np.array([(a, b) for a, b in rel if a < n and b < n], dtype=np.int64).reshape(-1, 2)
    train = np.random.default_rng(mask_seed).random(n) < 0.7
    triplets, n_anchors = sample_triplets(n, pos, rel, train, 300, seed)
    positive = {frozenset(e) for e in pos.tolist() if e[0] != e[1]}
    related = positive | {frozenset(e) for e in rel.tolist()}
    eligible = [a for a in range(n) if train[a]
                and any(frozenset((a, b)) in positive for b in range(n) if train[b] and b != a)
                and any(frozenset((a, b)) not in related for b in range(n) if train[b] and b != a)]
    assert n_anchors == len(eligible)
    if not eligible:
        assert triplets.shape == (0, 3)
        return
    assert triplets.shape == (300, 3)
    for a, p, x in triplets.tolist():
        assert train[a] and train[p] and train[x]
        assert frozenset((a, p)) in positive and a != p
        assert frozenset((a, x)) not in related and a != x
    again, _ = sample_triplets(n, pos, rel, train, 300, seed)
    assert np.array_equal(triplets, again)


def test_sampler_negatives_are_uniform():
    # Anchor 0 is related to 1 (positive) and 3; allowed negatives are 2, 4, 5: each about 1/3.
    triplets, _ = sample_triplets(6, np.array([[0, 1]]), np.array([[0, 3]]), np.array([True] * 6), 30_000, 0)
    neg = triplets[triplets[:, 0] == 0, 2]
    share = np.bincount(neg, minlength=6) / len(neg)
    assert share[[0, 1, 3]].sum() == 0
    assert np.allclose(share[[2, 4, 5]], 1 / 3, atol=0.03)


@pytest.mark.parametrize("pair_type", ["co_changed", "same_commit", "caller_callee"])
def test_deterministic_and_seeded(pair_type):
    log = _calls([(f"m{k % 4}::f{k}", f"m{k % 4}::f{k + 4}") for k in range(20)]) \
        if pair_type == "caller_callee" else MemLog(commit_rows(COMMITS))
    training = Training(pair_type=pair_type, holdout=0.2)
    one, two = generate_pairs(log, training), generate_pairs(log, training)
    assert one.texts == two.texts and np.array_equal(one.triplets, two.triplets)
    assert np.array_equal(one.heldout, two.heldout) and one.stats == two.stats
    other = generate_pairs(log, replace(training, seed=99))
    assert other.texts == one.texts and not np.array_equal(other.triplets, one.triplets)
    assert len(generate_pairs(log, replace(training, pairs=None)).triplets) == 1000  # the floor


# --- the development database (skipped when absent) ------------------------------------

@pytest.mark.skipif(not DEV_DB.exists(), reason=f"development data not found at {DEV_DB}")
@pytest.mark.parametrize("pair_type", ["co_changed", "same_commit"])
def test_dev_db(pair_type):
    with open_eventlog(DEV_DB) as log:
        pairset = generate_pairs(log, Training(pair_type=pair_type, holdout=0.2, pairs=None))
    _check_shape(pairset)
    _no_leak(pairset)
    assert pairset.stats["anchors"] > 200 and len(pairset.heldout) + len(pairset.validation) > 100
