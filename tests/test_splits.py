"""Split functions: exact per-user sizes, reproducibility, ordering rules, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fitmm.data.prepare.splitting import (
    global_temporal_split,
    holdout_sizes,
    mmrec_random_split,
    user_temporal_split,
)
from fitmm.errors import InputError

# n -> (train, valid, test); m = int(0.2 n), valid = ceil(m/2), test = floor(m/2) for n >= 10
EXPECTED_SIZES = {
    1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 5: (3, 1, 1), 9: (7, 1, 1),
    10: (8, 1, 1), 14: (12, 1, 1), 15: (12, 2, 1), 19: (16, 2, 1), 20: (16, 2, 2),
    24: (20, 2, 2), 25: (20, 3, 2), 34: (28, 3, 3), 35: (28, 4, 3), 100: (80, 10, 10),
    101: (81, 10, 10), 137: (110, 14, 13),
}


def _users_with_counts(counts: list[int], rng: np.random.Generator) -> np.ndarray:
    """User labels (arbitrary, non-contiguous IDs) with the given counts, rows interleaved."""
    ids = rng.choice(10_000, size=len(counts), replace=False)
    users = np.repeat(ids, counts)
    return users[rng.permutation(len(users))]


def _sizes_per_user(users: np.ndarray, x_label: np.ndarray) -> dict[int, tuple[int, int, int]]:
    return {int(u): tuple(int(((users == u) & (x_label == s)).sum()) for s in range(3))
            for u in np.unique(users)}


def test_holdout_sizes_match_documented_rule():
    n = np.array(sorted(EXPECTED_SIZES))
    n_valid, n_test = holdout_sizes(n)
    got = {int(k): (int(k - v - t), int(v), int(t)) for k, v, t in zip(n, n_valid, n_test)}
    assert got == EXPECTED_SIZES


def test_holdout_sizes_general_formula():
    n = np.arange(10, 5000)
    n_valid, n_test = holdout_sizes(n)
    m = np.array([int(0.2 * k) for k in n])
    assert np.array_equal(n_valid + n_test, m)
    assert np.array_equal(n_valid, -(-m // 2))  # ceil: validation gets the odd row
    assert np.array_equal(n_test, m // 2)


@pytest.mark.parametrize("seed", [0, 1, 999])
def test_mmrec_random_split_exact_sizes(seed):
    rng = np.random.default_rng(seed)
    counts = sorted(EXPECTED_SIZES) + list(rng.integers(1, 60, size=40))
    users = _users_with_counts(counts, rng)
    x_label = mmrec_random_split(users, seed)
    assert x_label.dtype == np.int8 and x_label.shape == users.shape
    checked = set()
    for user, sizes in _sizes_per_user(users, x_label).items():
        n = int((users == user).sum())
        n_valid, n_test = (int(v[0]) for v in holdout_sizes(np.array([n])))
        assert sizes == (n - n_valid - n_test, n_valid, n_test)
        if n in EXPECTED_SIZES:
            assert sizes == EXPECTED_SIZES[n]
            checked.add(n)
    assert checked == set(EXPECTED_SIZES)


def test_mmrec_random_split_reproducible_and_seed_dependent():
    users = _users_with_counts([30] * 50, np.random.default_rng(5))
    first = mmrec_random_split(users, 42)
    assert np.array_equal(first, mmrec_random_split(users.copy(), 42))
    assert not np.array_equal(first, mmrec_random_split(users, 43))


def test_mmrec_random_split_shuffles_within_user():
    users = np.zeros(20, dtype=np.int64)
    held_out = np.zeros(20, dtype=int)
    for seed in range(300):
        held_out += mmrec_random_split(users, seed) > 0
    # 4 of 20 rows are held out each time; every row must be held out sometimes, never always.
    assert held_out.min() > 0 and held_out.max() < 300
    assert held_out.sum() == 4 * 300


def test_user_temporal_split_holds_out_newest_rows_and_breaks_ties_by_row_order():
    users = np.array([7] * 12 + [3] * 4)
    timestamps = np.array([5, 1, 9, 9, 2, 8, 3, 7, 4, 6, 0, 9] + [10, 40, 30, 20])
    x_label = user_temporal_split(users, timestamps)
    # user 7: 12 rows, m = 2 -> valid 1, test 1. Newest timestamps: 9 (rows 2, 3, 11) -> by row
    # order row 11 is the newest (test), row 3 next (valid).
    assert x_label[11] == 2 and x_label[3] == 1
    assert (x_label[:12] > 0).sum() == 2
    # user 3: 4 rows -> 2 train, 1 valid, 1 test; newest is ts 40 (test), then 30 (valid).
    assert list(x_label[12:]) == [0, 2, 1, 0]


def test_user_temporal_split_sizes_follow_rule():
    rng = np.random.default_rng(3)
    counts = sorted(EXPECTED_SIZES)
    users = _users_with_counts(counts, rng)
    timestamps = rng.integers(0, 50, size=len(users))
    x_label = user_temporal_split(users, timestamps)
    for user, sizes in _sizes_per_user(users, x_label).items():
        rows = users == user
        assert sizes == EXPECTED_SIZES[int(rows.sum())]
        train_ts, held_ts = timestamps[rows & (x_label == 0)], timestamps[rows & (x_label > 0)]
        if len(train_ts) and len(held_ts):
            assert train_ts.max() <= held_ts.min()


def test_user_temporal_split_rejects_length_mismatch():
    with pytest.raises(InputError):
        user_temporal_split(np.zeros(3), np.zeros(2))


def test_global_temporal_split_is_a_time_cut():
    rng = np.random.default_rng(0)
    timestamps = rng.integers(0, 100, size=1000)
    x_label = global_temporal_split(timestamps, valid_fraction=0.1, test_fraction=0.2)
    assert np.bincount(x_label, minlength=3).tolist() == [700, 100, 200]
    assert timestamps[x_label == 0].max() <= timestamps[x_label == 1].min()
    assert timestamps[x_label == 1].max() <= timestamps[x_label == 2].min()


def test_global_temporal_split_ties_by_row_order():
    x_label = global_temporal_split(np.array([5, 5, 5, 5, 5, 5, 5, 5, 5, 5]))
    assert x_label.tolist() == [0] * 8 + [1, 2]


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_global_temporal_split_rejects_bad_fractions(fractions):
    with pytest.raises(InputError):
        global_temporal_split(np.arange(10), *fractions)


def test_empty_inputs():
    empty = np.zeros(0, dtype=np.int64)
    assert mmrec_random_split(empty, 0).shape == (0,)
    assert user_temporal_split(empty, empty).shape == (0,)
    assert global_temporal_split(empty).shape == (0,)


def test_splits_are_fast_on_300k_rows():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 35_000, size=300_000)
    timestamps = rng.integers(0, 10**9, size=300_000)
    start = time.process_time()  # CPU time: robust to other load on the machine
    mmrec_random_split(users, 0)
    user_temporal_split(users, timestamps)
    global_temporal_split(timestamps)
    assert time.process_time() - start < 1.0
