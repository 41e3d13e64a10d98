"""History questions (the later part of the log as a query set) and the search the build
chooses on them: no leakage into training, the rules that leave commits out, the choice rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from oxidize.pairs import generate_pairs
from oxidize.pairs.history import MAX_FILES, commit_file_questions, common_files
from oxidize.search.choice import CHOICE_Z, MIN_QUESTIONS, MenuScores, choose, score_menu
from oxidize.search.fusion import BY_NAME, DEFAULT, MENU, Fusion, resolve, without_projection
from oxidize.search.queryset import BenchQuery
from test_pair_types import commit_rows
from test_split import MemLog


@dataclass(frozen=True)
class Training:
    pair_type: str = "co_changed"
    pairs: int | None = 300
    event_types: tuple[str, ...] = ("session.goal", "session.decision")
    min_chars: int = 5
    seed: int = 1
    holdout: float = 0.25
    min_count: int = 2


MODULES = ["store", "command line", "network", "docs", "parser", "cache", "plugins", "tests"]


def _commits(n: int = 40) -> list[tuple[str, list[str]]]:
    """Commits over eight modules, each touching one module's two files together."""
    return [(f"change number {k} of the {MODULES[k % 8]} code",
             [f"{MODULES[k % 8].replace(' ', '_')}/a.py", f"{MODULES[k % 8].replace(' ', '_')}/b.py"])
            for k in range(n)]


def _pairs(commits, **training):
    return generate_pairs(MemLog(commit_rows(commits)), Training(**training))


def test_a_later_commit_contributes_nothing_to_training():
    """Rewriting the commits after the history cut changes the questions, never the triplets."""
    commits = _commits()
    before = _pairs(commits)
    later = len(before.history.queries)
    assert later == round(0.25 * len(commits))  # the latest quarter of the commits ask
    rewritten = commits[:-later] + [(f"tie store and network together {k}", ["store/a.py", "network/a.py"])
                                    for k in range(3)] + commits[-later + 3:]
    after = _pairs(rewritten)
    assert after.texts == before.texts  # the file table is the whole log's …
    np.testing.assert_array_equal(after.triplets, before.triplets)  # … training is not
    np.testing.assert_array_equal(after.related, before.related)
    assert [q["query"] for q in after.history.queries] == [m for m, _ in rewritten[-later:]]
    # without the cut the same rewrite would have made store and network related
    whole = _pairs(rewritten, holdout=0.0)
    texts = [t.split(":")[0].removeprefix("file ") for t in whole.texts]
    store, http = texts.index("store/a.py"), texts.index("network/a.py")
    assert {store, http} in [set(r) for r in whole.related.tolist()]
    assert {store, http} not in [set(r) for r in after.related.tolist()]


def test_history_questions_name_the_files_and_say_what_was_left_out(capsys):
    commits = _commits(40)
    commits[-1] = ("Merge pull request #12 from someone/branch", [])
    commits[-2] = ("Bump requests from 2.31.0 to 2.32.0", ["store/a.py"])
    commits[-3] = ("reformat every file of the project", [f"f{i}.py" for i in range(MAX_FILES + 1)])
    commits[-4] = ("wip", ["store/a.py"])
    pairset = _pairs(commits)
    queries = pairset.history.queries
    assert all(q["relevant_docs"] and q["query"].startswith("change number") for q in queries)
    assert queries[0] == {"id": f"{31:040x}"[:12], "query": commits[30][0], "relevant_docs": commits[30][1]}
    assert dict(pairset.history.skipped) == {"merges, bumps or releases": 2, f"over {MAX_FILES} files": 1,
                                             "subjects under 3 words": 1}
    out = capsys.readouterr().out
    assert "6 history questions (later commit subjects → the files they changed); left out 2 merges, " \
           "bumps or releases, 1 subjects under 3 words, 1 over 10 files" in out
    assert pairset.stats["history_questions"] == 6


def test_bots_common_files_and_deleted_files_answer_nothing():
    later = [{"sha": "a1", "message": "Update the retry policy for timeouts", "author": "dependabot[bot]",
              "files": ["net/retry.py"]},
             {"sha": "b2", "message": "Fix the retry policy for timeouts", "author": "Ann",
              "files": ["net/retry.py", "CHANGES.md", "old/gone.py"]},
             {"sha": "c3", "message": "Note the change in the changelog", "author": "Ann",
              "files": ["CHANGES.md"]},
             {"sha": "d4", "message": "Remove the old helper module", "author": "Ann", "files": ["old/gone.py"]}]
    common = common_files([["CHANGES.md", f"x{i}.py"] for i in range(20)] + [["y.py", "history.py"]] * 30
                          + [[f"z{i}.py"] for i in range(40)])
    # a changelog by its name; y.py and history.py touched by a third of the commits
    assert common == {"CHANGES.md", "y.py", "history.py"}
    history = commit_file_questions(later, common, present={"net/retry.py", "CHANGES.md"})
    assert history.queries == [{"id": "b2", "query": "Fix the retry policy for timeouts",
                                "relevant_docs": ["net/retry.py"]}]
    assert dict(history.skipped) == {"by bots": 1, "touching only files most commits touch": 1,
                                     "touching only files deleted since": 1}


def test_session_questions_are_goals_and_titles_that_never_find_themselves():
    rows = []
    for s in range(10):
        rows += [("session.started", f"s{s}", {"title": f"work on the parser part {s}"}, 10 * s),
                 ("session.goal", f"s{s}", {"content": f"make the parser faster for case {s}"}, 10 * s + 1),
                 ("session.decision", f"s{s}", {"content": f"decided to cache tokens in pass {s}"}, 10 * s + 2),
                 ("session.decision", f"s{s}", {"content": f"another decision for session {s}"}, 10 * s + 3)]
    log = MemLog(rows)
    pairset = generate_pairs(log, Training(pair_type="same_session", holdout=0.3))
    queries = pairset.history.queries
    held = {q["relevant_docs"][0] for q in queries}
    assert held == {"s7", "s8", "s9"}
    goals = [q for q in queries if q["query"].startswith("make the parser")]
    titles = [q for q in queries if q["query"].startswith("work on")]
    assert len(goals) == len(titles) == 3
    seq_of = {e.data.get("content"): e.seq for e in log.events(("session.goal",))}
    assert all(q["exclude_keys"] == [seq_of[q["query"]]] for q in goals)  # its own note
    assert all("exclude_keys" not in q for q in titles)  # a title is not searchable


# ------------------------------------------------------------------ fusion and the choice

def test_mix_scales_each_list_to_its_own_best_and_worst():
    lists = {"lexical": [(1, 12.0), (2, 8.0), (3, 2.0)], "raw": [(3, 0.9), (4, 0.6), (1, 0.3)]}
    ranked = BY_NAME["0.5lexical+0.5raw"].rank(lists, 4)
    # 1: 0.5*1 + 0.5*0 = 0.5; 2: 0.5*0.6 = 0.3; 3: 0.5*0 + 0.5*1 = 0.5; 4: 0.5*0.5 = 0.25
    assert [(key, round(score, 6)) for key, score, _ in ranked] == [(1, 0.5), (3, 0.5), (2, 0.3), (4, 0.25)]
    assert ranked[0][2] == {"lexical": 1, "raw": 3}
    rrf = BY_NAME["lexical+raw"].rank(lists, 2)
    assert [key for key, *_ in rrf] == [1, 3]  # 1/61 + 1/63 beats 1/63 + 1/61 only by order
    assert BY_NAME["lexical"].rank(lists, 2) == [(1, 12.0, {"lexical": 1}), (2, 8.0, {"lexical": 2})]


def test_modes_resolve_to_menu_entries():
    assert resolve(None) is DEFAULT and resolve("auto", chosen="lexical") is BY_NAME["lexical"]
    assert resolve("auto", chosen="no such search") is DEFAULT
    assert resolve("hybrid").name == "0.5lexical+0.5dense" and resolve("hybrid", base=True).name == "0.5lexical+0.5raw"
    assert resolve("dense", base=True).name == "raw"
    assert without_projection(BY_NAME["0.5lexical+0.25dense+0.25raw"]).lists == ("lexical", "raw")
    with pytest.raises(ValueError, match="unknown search mode 'fuzzy'; expected one of auto, hybrid"):
        resolve("fuzzy")
    assert len({f.name for f in MENU}) == len(MENU) and MENU[0] is DEFAULT  # the default wins ties


def _scores(n: int, per_name: dict[str, np.ndarray]) -> MenuScores:
    names = [f.name for f in MENU]
    rr = {name: per_name.get(name, np.full(n, 0.2)) for name in names}
    return MenuScores(names, rr, {k: v for k, v in rr.items()}, {k: v for k, v in rr.items()})


def test_the_default_stays_with_too_few_questions_or_no_clear_win():
    rng = np.random.default_rng(0)
    few = _scores(MIN_QUESTIONS - 1, {"lexical": np.ones(MIN_QUESTIONS - 1)})
    assert choose(few).search == DEFAULT.name and "fewer than 20" in choose(few).why
    n = 60
    noisy = rng.choice([0.0, 1.0], size=n)
    # lexical leads on the first half by chance and is no better on the second
    lead = np.where(np.arange(n) % 2 == 0, 1.0, noisy)
    base = np.where(np.arange(n) % 2 == 0, 0.2, noisy)
    choice = choose(_scores(n, {"lexical": lead, DEFAULT.name: base}))
    assert choice.search == DEFAULT.name and "did not clearly beat the default" in choice.why


def test_a_clear_win_on_both_halves_is_chosen_and_recorded():
    n = 40
    better = np.where(np.arange(n) % 5 == 0, 0.5, 1.0)
    choice = choose(_scores(n, {"raw": better, DEFAULT.name: np.full(n, 0.5)}))
    assert choice.search == "raw" and f"z {CHOICE_Z:g}" in choice.why
    record = choice.record()
    assert record["search"] == "raw" and record["default"] == DEFAULT.name and record["questions"] == n
    assert record["mrr@10"]["raw"] == pytest.approx(float(better.mean()), abs=1e-4)


class _Search:
    """Lists and source ids of a fake index: keys 1..6, ids 'f1'..'f6'."""

    def __init__(self, lists):
        self._lists = lists

    def lists(self, text, names, k, vector=None):
        return {name: self._lists[text][name] for name in names}, None

    def embed_queries(self, texts):
        return None

    def source_ids(self, keys):
        return {key: f"f{key}" for key in keys}

    def files(self):
        return False


def test_score_menu_ranks_every_entry_from_one_search_and_drops_excluded_items():
    lists = {"q": {"lexical": [(1, 5.0), (2, 4.0)], "dense": [(2, 0.9), (3, 0.8)], "raw": [(3, 0.9), (2, 0.8)]}}
    query = BenchQuery("q", "q", ("f2",), ())
    scores = score_menu(_Search(lists), [query], [BY_NAME["lexical"], BY_NAME["dense"], BY_NAME["raw"]])
    assert {name: float(rr[0]) for name, rr in scores.rr.items()} == {"lexical": 0.5, "dense": 1.0, "raw": 0.5}
    own = BenchQuery("q", "q", ("f2",), (), exclude=(1,))  # key 1 is the question's own text
    scores = score_menu(_Search(lists), [own], [BY_NAME["lexical"]])
    assert float(scores.rr["lexical"][0]) == 1.0
    assert Fusion("x", ("lexical",), "single").rank({}, 3) == []


# ------------------------------------------------------------------ commit_files pairs

def test_commit_files_pairs_a_message_with_the_files_it_changed_and_never_with_a_later_commit():
    commits = _commits(40)
    pairset = _pairs(commits, pair_type="commit_files")
    n_commits = pairset.stats["commits"]
    texts = pairset.texts
    files = [t.split(":")[0].removeprefix("file ") for t in texts[n_commits:]]
    changed = {c: set(f) for c, (m, f) in enumerate(commits)}
    message_of = {m: c for c, (m, _f) in enumerate(commits)}
    folders = []
    for a, p, n in pairset.triplets.tolist():
        assert a < n_commits <= p and n >= n_commits  # a message, a file it changed, a file it did not
        commit = message_of[texts[a]]
        assert files[p - n_commits] in changed[commit] and files[n - n_commits] not in changed[commit]
        assert commit < 30  # the latest quarter of the commits never trains
        folders.append(files[p - n_commits].split("/")[0] == files[n - n_commits].split("/")[0])
    # each commit here changes both files of its folder: no sibling is left, so a negative is
    # always a file of another folder
    assert not any(folders)
    assert len(pairset.history.queries) == 10 and pairset.heldout.shape[1] == 2
    rewritten = commits[:30] + [(f"tie the store to the network {k}", ["store/a.py", "network/a.py"])
                                for k in range(10)]
    again = _pairs(rewritten, pair_type="commit_files")

    def as_texts(ps):
        return [tuple(ps.texts[i] for i in row) for row in ps.triplets.tolist()]

    assert as_texts(again) == as_texts(pairset)  # the later commits changed nothing training sees


def test_commit_files_hard_negatives_come_from_the_positives_folder():
    commits = [(f"edit the parser part number {k}", [f"parser/p{k % 6}.py"]) for k in range(60)]
    pairset = _pairs(commits, pair_type="commit_files", pairs=2000, holdout=0.0)
    n_commits = pairset.stats["commits"]
    same = np.mean([pairset.texts[p].split(":")[0].rsplit("/", 1)[0] ==
                    pairset.texts[n].split(":")[0].rsplit("/", 1)[0] for _a, p, n in pairset.triplets.tolist()])
    assert n_commits == 60 and same == 1.0  # one folder: every negative is a sibling, never the file itself
    assert all(pairset.texts[p] != pairset.texts[n] for _a, p, n in pairset.triplets.tolist())


def test_a_commit_the_log_holds_twice_asks_under_two_ids():
    from oxidize.search.queryset import queries_of

    later = [{"sha": "abc", "message": "Fix the retry of timeouts", "author": "a", "files": ["net.py"]}] * 2
    history = commit_file_questions(later, set())
    ids = [q["id"] for q in history.query_set("h")["queries"]]
    assert ids == ["abc", "abc-2"]
    assert len(queries_of(history.query_set("h"), Path("h.json"))) == 2  # a set the build reads
