"""Mini-batch steps (kmdist.kmeans._minibatch): seeding, reassignment, early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from kmdist import MiniBatchKMeans
from kmdist.kmeans._minibatch import MiniBatchState, best_seeding
from kmdist.kmeans._rows import in_memory_rows


def mb_state(counts, ratio=0.01):
    return MiniBatchState(
        counts=np.asarray(counts, dtype=np.float64),
        batch_size=10,
        n_samples=100,
        reassignment_ratio=ratio,
    )


def test_minibatch_reassigns_starved_centre():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.1, (500, 2)), rng.normal(5, 0.1, (500, 2))])
    init = np.array([[0.0, 0.0], [5.0, 5.0], [1e3, 1e3]])
    mb = MiniBatchKMeans(3, init=init, batch_size=100, random_state=0, max_iter=5).fit(X)
    assert np.abs(mb.cluster_centers_).max() < 10  # the starved centre moved onto data


def test_minibatch_early_stopping_on_smoothed_inertia():
    from kmdist.kmeans._minibatch import MiniBatchState

    # With batch_size == n_samples the smoothing weight is ~1: the smoothed inertia is the
    # batch inertia. Step 1 never stops; then 3 steps without a new minimum stop the run.
    state = MiniBatchState(counts=np.zeros(2), batch_size=10, n_samples=9, reassignment_ratio=0)
    inertias = [100.0, 50.0, 40.0, 45.0, 41.0, 40.5]
    stops = [state.converged(i + 1, 1.0, 0.0, x * 10, 3) for i, x in enumerate(inertias)]
    assert stops == [False, False, False, False, False, True]
    assert not MiniBatchState(
        counts=np.zeros(2), batch_size=10, n_samples=9, reassignment_ratio=0
    ).converged(2, 1e-9, 0.0, 1.0, None)  # tol 0 and no max_no_improvement: never


def test_minibatch_stops_early_unless_disabled(blobs):
    X, _ = blobs
    n_max = 100 * len(X) // 50  # max_iter epochs of batches of 50
    kw = {"batch_size": 50, "random_state": 0, "max_iter": 100}
    early = MiniBatchKMeans(4, max_no_improvement=3, **kw).fit(X)
    never = MiniBatchKMeans(4, max_no_improvement=None, **kw).fit(X)
    by_tol = MiniBatchKMeans(4, max_no_improvement=None, tol=1.0, **kw).fit(X)
    assert early.n_steps_ < n_max and by_tol.n_steps_ < n_max
    assert never.n_steps_ == n_max
    assert early.inertia_ <= 1.05 * never.inertia_


def test_minibatch_verbose(blobs, capsys):
    MiniBatchKMeans(4, random_state=0, verbose=1, n_init=3, init="random").fit(blobs[0])
    out = capsys.readouterr().out
    assert "Minibatch step 1/" in out and "Inertia for init 1/3" in out
    assert "Converged (lack of improvement in inertia)" in out


def test_best_seeding_keeps_the_seeding_with_the_lowest_validation_inertia(rng):
    X = np.vstack([rng.normal(0, 0.1, (200, 2)), rng.normal(10, 0.1, (200, 2))])
    rows = in_memory_rows(X, np.ones(len(X)))
    good, bad = np.array([[0.0, 0.0], [10.0, 10.0]]), np.array([[5.0, 5.0], [6.0, 6.0]])
    seen = []

    def init(Xs, ws):
        seen.append((Xs.shape, ws.shape))
        return good if len(seen) == 2 else bad

    lines = []
    got = best_seeding(rows, 2, init, 3, 50, rng, log=lines.append)
    assert np.array_equal(got, good)
    assert seen == [((50, 2), (50,))] * 3
    assert [line.split(":")[0] for line in lines] == [f"Inertia for init {r}/3" for r in (1, 2, 3)]
    # Given centres are used as they are, drawing nothing.
    before = rng.bit_generator.state
    given = best_seeding(rows, 2, bad.astype(np.float32), 3, 50, rng)
    assert given.dtype == np.float64 and np.array_equal(given, bad)
    assert rng.bit_generator.state == before


def test_reassignment_takes_the_lowest_counts_up_to_half_a_batch():
    s = mb_state([0.0, 1.0, 2.0, 100.0], ratio=0.5)
    assert s._to_reassign(100).tolist() == [True, True, True, False]
    to = s._to_reassign(4)  # three below half the largest count, capped at 4 // 2
    assert to.tolist() == [True, True, False, False]
    s._finish_reassign(to)
    assert s.counts.tolist() == [2.0, 2.0, 2.0, 100.0]  # as the least counted kept centre
    assert not mb_state([0.0, 100.0], ratio=0.0)._to_reassign(100).any()


@pytest.mark.parametrize("low", [1.0, 4.0])
def test_reassignment_clock_slows_as_counts_grow(low):
    s = mb_state([low, 50.0])
    due = [s._reassign_due() for _ in range(3 * int(10 * (1 + low)))]
    assert np.flatnonzero(due).tolist() == [int(10 * (1 + low)) * i - 1 for i in (1, 2, 3)]
    empty = mb_state([0.0, 50.0])
    assert all(empty._reassign_due() for _ in range(3))  # an empty centre: every step
