"""Tests for the held-out evaluator: exact metrics on hand-made rankings, the random
baseline's expectation, the held-out split's shape, and the three-way comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oxidize.evaluate import (PRIMARY_METRIC, compare, evaluate, heldout_task, random_expectation,
                              score_base, score_projection, score_random, scored_queries)


def unit(*v):
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def angle(deg):
    r = math.radians(deg)
    return np.array([math.cos(r), math.sin(r)])


# ---------------------------------------------------------------- evaluate

def test_metrics_on_a_known_ranking():
    # corpus on a circle; query at 0°: ranking by angle distance is c1, c2, c3, c4
    corpus = {"c1": angle(10), "c2": angle(20), "c3": angle(30), "c4": angle(40)}
    queries = {"q": angle(0)}
    m = evaluate(queries, corpus, {"q": {"c2", "c4"}}, k=10)
    assert m == {"mrr@10": pytest.approx(1 / 2), "p@10": pytest.approx(2 / 10),
                 "r@10": pytest.approx(1.0)}
    m3 = evaluate(queries, corpus, {"q": {"c2", "c4"}}, k=3)
    assert m3 == {"mrr@3": pytest.approx(1 / 2), "p@3": pytest.approx(1 / 3),
                  "r@3": pytest.approx(1 / 2)}
    m1 = evaluate(queries, corpus, {"q": {"c2", "c4"}}, k=1)
    assert m1["mrr@1"] == 0.0 and m1["p@1"] == 0.0 and m1["r@1"] == 0.0
    assert PRIMARY_METRIC == "mrr@10"


def test_query_is_excluded_from_its_own_ranking():
    vecs = {0: angle(0), 1: angle(50), 2: angle(5)}
    # query 0 is in the corpus and would rank itself first; 2 is nearest after it
    m = evaluate({0: vecs[0]}, vecs, {0: {0, 2}})
    assert m["mrr@10"] == 1.0
    assert m["r@10"] == 1.0  # the query itself does not count as relevant
    m = evaluate({0: vecs[0]}, vecs, {0: {1}})
    assert m["mrr@10"] == 0.5


def test_queries_without_relevant_items_are_not_scored():
    corpus = {"a": angle(0), "b": angle(90)}
    queries = {"q1": angle(1), "q2": angle(2)}
    relevant = {"q1": {"a"}, "q2": {"missing"}}
    assert scored_queries(queries, corpus, relevant) == 1
    assert evaluate(queries, corpus, relevant)["mrr@10"] == 1.0
    assert evaluate(queries, corpus, {}) == {"mrr@10": 0.0, "p@10": 0.0, "r@10": 0.0}


def test_ties_go_to_the_earlier_corpus_item():
    corpus = {"x": unit(1, 1), "y": unit(1, 1), "z": unit(-1, 0)}
    q = {"q": unit(1, 1)}
    assert evaluate(q, corpus, {"q": {"x"}})["mrr@10"] == 1.0
    assert evaluate(q, corpus, {"q": {"y"}})["mrr@10"] == 0.5
    reordered = {"y": corpus["y"], "x": corpus["x"], "z": corpus["z"]}
    assert evaluate(q, reordered, {"q": {"y"}})["mrr@10"] == 1.0


def test_indices_into_embeddings_equal_vectors_and_scale_does_not_matter():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 6))
    ids = [f"t{i}" for i in range(40)]
    relevant = {ids[i]: {ids[j] for j in rng.choice(40, 4, replace=False)} for i in range(0, 40, 3)}
    queries = {ids[i]: i for i in range(0, 40, 3)}
    corpus = {ids[i]: i for i in range(40)}
    by_index = evaluate(queries, corpus, relevant, embeddings=emb)
    by_vector = evaluate({q: emb[i] * 7.0 for q, i in queries.items()},
                         {c: emb[i] for c, i in corpus.items()}, relevant)
    assert by_index == pytest.approx(by_vector)
    # the top-k shortcut (argpartition) agrees with a full sort
    import oxidize.evaluate as ev

    full = evaluate(queries, corpus, relevant, embeddings=emb, k=39)
    assert 0 < full["mrr@39"] <= 1 and full["r@39"] == pytest.approx(1.0)


def test_evaluate_does_not_touch_its_inputs():
    emb = np.random.default_rng(1).normal(size=(10, 3))
    before = emb.copy()
    relevant = {0: {1, 2}}
    evaluate({0: 0}, {i: i for i in range(10)}, relevant, embeddings=emb)
    assert np.array_equal(emb, before) and relevant == {0: {1, 2}}


def test_query_chunks_give_the_same_result(monkeypatch):
    import oxidize.evaluate as ev

    rng = np.random.default_rng(2)
    emb = rng.normal(size=(60, 5))
    queries = {i: i for i in range(60)}
    relevant = {i: {(i + 1) % 60, (i + 7) % 60} for i in range(60)}
    whole = ev.evaluate(queries, queries, relevant, embeddings=emb)
    monkeypatch.setattr(ev, "QUERY_CHUNK", 7)
    assert ev.evaluate(queries, queries, relevant, embeddings=emb) == whole


# ---------------------------------------------------------------- random baseline

def test_random_expectation_small_cases_exactly():
    # N=2 items, one relevant: rank 1 or 2 with equal chance
    assert random_expectation(2, 1, k=10) == pytest.approx((0.75, 1 / 10, 1.0))
    # everything relevant: always rank 1
    assert random_expectation(5, 5, k=3)[0] == 1.0
    assert random_expectation(0, 1) == (0.0, 0.0, 0.0)
    mrr, p, r = random_expectation(100, 1, k=10)
    assert mrr == pytest.approx(sum(1 / i for i in range(1, 11)) / 100)
    assert p == pytest.approx(1 / 100) and r == pytest.approx(10 / 100)


def test_random_expectation_matches_a_seeded_average():
    rng = np.random.default_rng(3)
    n, rel, k = 30, 4, 10
    relevant = set(range(rel))
    trials = 20000
    mrr = p = r = 0.0
    for _ in range(trials):
        ranking = rng.permutation(n)[:k]
        hits = [i + 1 for i, item in enumerate(ranking) if item in relevant]
        mrr += 1 / hits[0] if hits else 0.0
        p += len(hits) / k
        r += len(hits) / rel
    expected = random_expectation(n, rel, k)
    assert mrr / trials == pytest.approx(expected[0], abs=0.01)
    assert p / trials == pytest.approx(expected[1], abs=0.005)
    assert r / trials == pytest.approx(expected[2], abs=0.01)


def test_score_random_excludes_the_query_from_the_corpus():
    corpus = {i: i for i in range(5)}
    m = score_random({0: 0}, corpus, {0: {1}})
    assert m["mrr@10"] == pytest.approx(random_expectation(4, 1)[0])


# ---------------------------------------------------------------- held-out split

def heldout_fixture():
    """Texts 0..9 train; 10..17 are held out in two groups {10..13} and {14..17}."""
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(2, 8))
    emb = rng.normal(size=(18, 8))
    emb[10:14] += 3 * centres[0]
    emb[14:18] += 3 * centres[1]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    groups = [range(10, 14), range(14, 18)]
    pairs = np.array([(q, c) for g in groups for q in g for c in g if q != c], dtype=np.int32)
    return emb.astype(np.float32), pairs


def test_heldout_task_corpus_is_every_text_in_the_split():
    _, pairs = heldout_fixture()
    queries, corpus, relevant = heldout_task(pairs)
    assert list(corpus) == list(range(10, 18))
    assert set(queries) == set(range(10, 18))
    assert relevant[10] == {11, 12, 13}
    empty = heldout_task(np.zeros((0, 2), np.int32))
    assert empty == ({}, {}, {})


def test_compare_random_base_projection():
    emb, pairs = heldout_fixture()
    identity = {"w0": np.eye(8, dtype=np.float32), "w1": np.zeros((3, 8), np.float32),
                "b1": np.zeros(3, np.float32), "w2": np.zeros((8, 3), np.float32),
                "b2": np.zeros(8, np.float32)}
    result = compare(emb, pairs, identity)
    assert set(result) == {"random", "base", "projection", "primary_metric", "heldout_queries",
                           "heldout_queries_total"}
    assert result["primary_metric"] == "mrr@10"
    assert result["heldout_queries"] == result["heldout_queries_total"] == 8
    assert result["projection"] == pytest.approx(result["base"])
    assert result["base"]["mrr@10"] > result["random"]["mrr@10"]
    assert result["random"] == pytest.approx(score_random(*heldout_task(pairs)))
    assert score_base(emb, pairs) == result["base"]
    assert score_projection(identity, emb, pairs) == pytest.approx(result["base"])


def test_heldout_split_equals_the_mapping_path(monkeypatch):
    """The index-array split (what builds and training score with) ranks exactly like
    evaluate() over heldout_task's dicts and sets — with duplicate pairs, self-pairs,
    unsorted rows, texts that are only ever relevant, and several similarity blocks."""
    import oxidize.evaluate as ev

    rng = np.random.default_rng(5)
    emb = rng.normal(size=(80, 6)).astype(np.float32)
    pairs = rng.integers(0, 40, size=(300, 2))
    pairs = np.concatenate([pairs, pairs[:20], np.array([[3, 3], [41, 42], [42, 41], [43, 41]])])
    monkeypatch.setattr(ev, "SIM_BLOCK", 3 * 44)  # 3 queries per block
    monkeypatch.setattr(ev, "ROW_BLOCK", 7)
    split = ev.HeldoutSplit(pairs)
    queries, corpus, relevant = heldout_task(pairs)
    assert split.texts.tolist() == list(corpus)
    assert split.n_queries == ev.scored_queries(queries, corpus, relevant) == len(queries)
    assert split.metrics(lambda texts: emb[texts]) == ev.evaluate(queries, corpus, relevant,
                                                                   embeddings=emb)
    assert split.random() == ev.score_random(queries, corpus, relevant)
    assert 41 in split.texts and split.texts[split.queries].tolist() == sorted(queries)


def test_large_split_scores_evenly_spaced_queries(monkeypatch):
    """Above MAX_QUERIES queries, every (total / cap)-th query is scored against the whole
    corpus: the same metrics as evaluate() over exactly those queries."""
    import oxidize.evaluate as ev

    rng = np.random.default_rng(7)
    emb = rng.normal(size=(50, 4)).astype(np.float32)
    pairs = np.array([(q, c) for q in range(40) for c in ((q + 1) % 40, (q + 5) % 40, 45)])
    split = ev.HeldoutSplit(pairs, max_queries=8)
    assert (split.n_queries, split.total_queries) == (8, 40)
    assert split.texts[split.queries].tolist() == [0, 5, 10, 15, 20, 25, 30, 35]
    queries, corpus, relevant = heldout_task(pairs)
    chosen = {q: q for q in split.texts[split.queries].tolist()}
    assert split.metrics(lambda texts: emb[texts]) == ev.evaluate(chosen, corpus, relevant,
                                                                   embeddings=emb)
    assert split.random() == ev.score_random(chosen, corpus, relevant)
    monkeypatch.setattr(ev, "MAX_QUERIES", 8)
    result = compare(emb, pairs)
    assert (result["heldout_queries"], result["heldout_queries_total"]) == (8, 40)
    assert result["base"] == split.metrics(lambda texts: emb[texts])


def test_compare_without_heldout_queries():
    emb, _ = heldout_fixture()
    result = compare(emb, np.zeros((0, 2), np.int32), None)
    assert result == {"random": None, "base": None, "projection": None,
                      "primary_metric": "mrr@10", "heldout_queries": 0,
                      "heldout_queries_total": 0}
