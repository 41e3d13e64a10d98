"""Training that stops when it cannot win (oxidize/train/early_stop.py): the rule itself,
a training that falls clearly below its start map stopping inside its first epoch, and the
weights of a training that wins coming out byte for byte as without the checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oxidize.train import blas, early_stop, trainer
from oxidize.train.early_stop import EarlyStop
from oxidize.train.trainer import train_projection
from test_train import KW, grouped_problem


START = np.random.default_rng(0).uniform(0.2, 1.0, 200)


def ranks_with(shift: float, seed: int) -> np.ndarray:
    """Per-query reciprocal ranks: the start's, moved by ``shift`` with some noise."""
    return np.clip(START + shift + np.random.default_rng(seed).normal(0, 0.05, START.size), 0, 1)


def test_two_clear_falls_in_a_row_without_recovery_stop():
    stop = EarlyStop(START, float(START.mean()), n_batches=100, batch_size=32)
    # the eighths, and after 512, 1,024 and 2,048 triplets (16, 32, 64 minibatches of 32)
    assert stop.marks == [12, 16, 25, 32, 37, 50, 62, 64, 75, 87]
    assert stop.due(1, 20, 30) and not stop.due(1, 26, 31) and not stop.due(2, 20, 30)
    assert stop.next_mark(1, 0) == 12 and stop.next_mark(1, 16) == 25
    assert stop.next_mark(1, 87) is None and stop.next_mark(2, 0) is None
    check = lambda shift, seed, done: stop.check(ranks_with(shift, seed), float(ranks_with(shift, seed).mean()), 1, done)  # noqa: E731
    assert not check(-0.002, 1, 25)   # within noise: not clearly below
    assert not check(-0.3, 2, 50)     # clearly below, once
    assert not check(-0.1, 3, 75)     # clearly below, and clearly recovering
    assert check(-0.1, 4, 100)        # below twice, no clear rise: stop
    assert stop.stopped_at == (1, 100)
    assert "did not recover" in stop.words(100, 10, seconds=2.0)
    again = EarlyStop(START, float(START.mean()), n_batches=100, batch_size=32)
    assert not again.check(ranks_with(-0.3, 5), 0.3, 1, 25)
    assert not again.check(ranks_with(0.0, 6), 0.6, 1, 50)   # back at the start: count restarts
    assert not again.check(ranks_with(-0.3, 7), 0.3, 1, 75)


def hurtful_problem():
    """Forty groups; the triplets are noise (random texts): with a high learning rate the
    identity start, which ranks the held-out groups well, is pulled apart."""
    emb, trip, held = grouped_problem(n_groups=40, n_triplets=4000, seed=0)
    trip = np.random.default_rng(5).integers(0, emb.shape[0], size=trip.shape).astype(np.int32)
    return emb, trip, held


def test_a_training_clearly_below_its_start_stops_inside_the_first_epoch(monkeypatch):
    monkeypatch.setattr(blas, "SEGMENT_TRIPLETS", 256)  # several segments per epoch
    emb, trip, held = hurtful_problem()
    kw = {**KW, "out": 16, "epochs": 10, "learning_rate": 0.1, "init": "identity", "patience": None}
    result = train_projection(emb, trip, **kw, heldout=held)
    assert result.stopped_early and result.chosen_epoch == 0
    assert len(result.losses) <= 2 and "did not recover" in result.stop_note, result.stop_note
    assert max(result.heldout_mrr[1:]) < result.heldout_mrr[0]
    start = train_projection(emb, trip, **{**kw, "epochs": 1, "learning_rate": 1e-12}, heldout=held)
    for k in ("w0", "w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(result.weights[k], start.weights[k])
    monkeypatch.setattr(early_stop, "STOP_Z", math.inf)  # without the rule …
    monkeypatch.setattr(early_stop, "REACH_Z", -math.inf)  # … and the one below: all ten epochs
    assert len(train_projection(emb, trip, **kw, heldout=held).losses) == 10


def test_the_checks_and_the_stop_do_not_depend_on_the_segments(monkeypatch):
    """The BLAS probes segment an epoch differently on other machines; the trainer ends a
    segment at each check, so a training stops after the same minibatches either way."""
    emb, trip, held = hurtful_problem()
    kw = {**KW, "out": 16, "epochs": 10, "learning_rate": 0.1, "init": "identity", "patience": None}
    seen = {}
    original = EarlyStop.check
    for segment in (96, 4096):
        monkeypatch.setattr(blas, "SEGMENT_TRIPLETS", segment)
        checks = []
        monkeypatch.setattr(EarlyStop, "check", lambda self, ranks, mrr, epoch, done:
                            checks.append((epoch, done)) or original(self, ranks, mrr, epoch, done))
        result = train_projection(emb, trip, **kw, heldout=held)
        assert result.stopped_early
        seen[segment] = (checks, result.stop_note)
    assert seen[96] == seen[4096]
    first = EarlyStop(START, 0.5, n_batches=4000 // KW["batch_size"], batch_size=KW["batch_size"])
    assert seen[96][0][0] == (1, first.marks[0])  # the first check at the first mark


@pytest.mark.parametrize("segment", [256, blas.SEGMENT_TRIPLETS])
def test_a_training_that_wins_gives_the_same_bytes_as_without_the_checks(monkeypatch, segment):
    monkeypatch.setattr(blas, "SEGMENT_TRIPLETS", segment)
    monkeypatch.setattr(trainer, "EPOCH_CLEAR_Z", -1e9)  # any better epoch is kept
    emb, trip, held = grouped_problem(n_triplets=2000)
    kw = {**KW, "epochs": 4, "learning_rate": 1e-2, "patience": None, "init": "pca"}
    checked = train_projection(emb, trip, **kw, heldout=held)
    assert checked.chosen_epoch and checked.chosen_epoch > 0  # training wins here
    monkeypatch.setattr(early_stop, "STOP_Z", math.inf)
    unchecked = train_projection(emb, trip, **kw, heldout=held)
    assert not checked.stopped_early and checked.losses == unchecked.losses
    for k in checked.weights:
        assert checked.weights[k].tobytes() == unchecked.weights[k].tobytes()


def test_a_training_that_hovers_under_the_bar_stops_after_its_first_epochs(monkeypatch):
    from oxidize.train import trainer

    emb, trip, held = grouped_problem()
    kw = {**KW, "epochs": 6, "learning_rate": 1e-2, "patience": None, "init": "pca"}
    monkeypatch.setattr(trainer, "EPOCH_CLEAR_Z", 1e9)  # no epoch clears the bar …
    monkeypatch.setattr(early_stop, "REACH_Z", 1e9)  # … nor comes within reach of it
    result = train_projection(emb, trip, **kw, heldout=held)
    assert len(result.losses) == early_stop.REACH_EPOCHS and result.stopped_early and result.chosen_epoch == 0
    assert result.stop_note.startswith("no epoch came within reach of the start map's ")
    monkeypatch.setattr(early_stop, "REACH_Z", -math.inf)
    assert len(train_projection(emb, trip, **kw, heldout=held).losses) == 6


def test_where_an_early_epoch_clears_the_bar_the_reach_rule_changes_nothing(monkeypatch):
    emb, trip, held = grouped_problem()
    kw = {**KW, "epochs": 5, "learning_rate": 1e-2, "init": "pca"}
    monkeypatch.setattr(trainer, "EPOCH_CLEAR_Z", -1e9)  # a better epoch is kept: epoch 1 here
    monkeypatch.setattr(early_stop, "REACH_Z", 1e9)  # the rule would stop anything not kept
    kept = train_projection(emb, trip, **kw, heldout=held)
    assert kept.chosen_epoch and len(kept.losses) == 5  # epoch 1 was kept, so every epoch ran
    monkeypatch.setattr(early_stop, "REACH_Z", -math.inf)
    without = train_projection(emb, trip, **kw, heldout=held)
    assert without.heldout_mrr == kept.heldout_mrr
    for k in ("w0", "w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(without.weights[k], kept.weights[k])
