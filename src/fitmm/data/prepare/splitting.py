"""Train / validation / test splits of an interaction table (pure numpy, exactly reproducible).

Every function returns ``x_label``, an ``int8`` array with one entry per interaction row:
0 = train, 1 = validation, 2 = test (the ``x_label`` column of the PROTOCOL ``.inter`` file).

Per-user hold-out sizes (used by both per-user splits) for a user with ``n`` interactions:

* ``n >= 10``: ``m = int(0.2 * n)`` rows are held out; validation gets ``ceil(m / 2)`` of them
  and test gets ``floor(m / 2)`` (with an odd ``m`` the extra row goes to validation, the half
  that comes first); the remaining ``n - m`` rows are train.
* ``3 <= n < 10``: ``n - 2`` train, 1 validation, 1 test.
* ``n == 2``: 1 train, 0 validation, 1 test; ``n == 1``: the single row is train. (PROTOCOL's
  ``n - 2 / 1 / 1`` rule has no meaning below 3 rows; these users only occur when no k-core
  filter is applied. Keeping a train row first means the user can still be evaluated.)

Within a user the rows are put in an order (random or by time) and the held-out rows are the
*last* ones of that order: the first ``n - m`` rows are train, then validation, then test.

``fitmm data prepare`` splits the cleaned rows (sorted by user and item) with the split named by
``--split``: ``random`` (:func:`mmrec_random_split`, seeded by ``--seed``), ``user-temporal``
(:func:`user_temporal_split`) or ``global-temporal`` (:func:`global_temporal_split`).
"""

from __future__ import annotations

import numpy as np

from fitmm.errors import InputError, ParameterError

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")  # the x_label values 0, 1, 2 in order
SPLITS = ("random", "user-temporal", "global-temporal")
DEFAULT_SEED = 999


def check_split(split: str) -> None:
    """Raise :class:`ParameterError` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ParameterError("split", split, f"unknown split (choose from {', '.join(SPLITS)})")


def split_labels(split: str, users: np.ndarray, timestamps: np.ndarray | None,
                 seed: int) -> np.ndarray:
    """``x_label`` of each row by the split named ``split`` (one of :data:`SPLITS`; the temporal
    ones need ``timestamps``, the random one uses ``seed``)."""
    check_split(split)
    if split == "random":
        return mmrec_random_split(users, seed)
    if split == "user-temporal":
        return user_temporal_split(users, timestamps)
    return global_temporal_split(timestamps)


def split_sizes(x_label: np.ndarray) -> dict[str, int]:
    """Rows per split: ``{"train": n, "valid": n, "test": n}``."""
    return {name: int((x_label == label).sum()) for label, name in enumerate(SPLIT_NAMES)}


def holdout_sizes(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(n_valid, n_test)`` per user for interaction counts ``n`` (see module docstring)."""
    n = np.asarray(n, dtype=np.int64)
    m = (n * 2) // 10  # int(0.2 * n) without floating-point rounding
    large = n >= 10
    n_valid = np.where(large, m - m // 2, (n >= 3).astype(np.int64))
    n_test = np.where(large, m // 2, (n >= 2).astype(np.int64))
    return n_valid, n_test


def _label_grouped_rows(users: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Label rows given ``order``: a permutation listing each user's rows contiguously.

    Inside each user's block, ``order`` gives the sequence train → validation → test.
    """
    n_rows = len(order)
    if n_rows == 0:
        return np.zeros(0, dtype=np.int8)
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, n_rows])
    block = np.repeat(np.arange(len(starts)), counts)
    position = np.arange(n_rows) - starts[block]
    n_valid, n_test = holdout_sizes(counts)
    n = counts[block]
    first_valid = n - n_valid[block] - n_test[block]
    first_test = n - n_test[block]
    labels_sorted = (position >= first_valid).astype(np.int8) + (position >= first_test)
    x_label = np.empty(n_rows, dtype=np.int8)
    x_label[order] = labels_sorted
    return x_label


def mmrec_random_split(users: np.ndarray, seed: int) -> np.ndarray:
    """MMRec's random per-user split (PROTOCOL "Splits").

    Each user's interactions are shuffled with a generator seeded by ``seed`` (one random
    permutation of all rows from ``numpy.random.default_rng(seed)``; sorting by (user,
    permutation rank) shuffles every user's rows independently and uniformly). In that shuffled
    order the first rows are train and the last ones validation then test, with the sizes given
    in the module docstring. The result depends only on ``users`` (values and row order) and
    ``seed``, so the same inputs always give the same labels.

    Args:
        users: one user identifier (any sortable dtype) per interaction row.
        seed: seed of the shuffle.

    Returns:
        ``x_label`` (int8, 0 train / 1 validation / 2 test) per row.
    """
    users = np.asarray(users)
    random_rank = np.random.default_rng(seed).permutation(len(users))
    order = np.lexsort((random_rank, users))
    return _label_grouped_rows(users, order)


def user_temporal_split(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Per-user temporal split: each user's oldest rows are train, the newest validation/test.

    Each user's rows are ordered by timestamp (equal timestamps keep their row order); the
    hold-out sizes are those of the MMRec rule (module docstring), so the newest ``floor(m/2)``
    rows are test and the ``ceil(m/2)`` before them validation.

    Args:
        users: one user identifier per interaction row.
        timestamps: one numeric timestamp per row.

    Returns:
        ``x_label`` (int8) per row.
    """
    users = np.asarray(users)
    timestamps = np.asarray(timestamps)
    if timestamps.shape != users.shape:
        raise InputError(f"user_temporal_split: {len(timestamps)} timestamps for {len(users)} rows")
    order = np.lexsort((timestamps, users))  # lexsort is stable: ties stay in row order
    return _label_grouped_rows(users, order)


def global_temporal_split(timestamps: np.ndarray, valid_fraction: float = 0.1,
                          test_fraction: float = 0.1) -> np.ndarray:
    """Global temporal split: one time cut for everybody.

    Rows are ranked by timestamp (equal timestamps keep their row order); the newest
    ``int(test_fraction * N)`` rows are test, the ``int(valid_fraction * N)`` rows before them
    validation and the rest train. Rows with the same timestamp may fall on both sides of a cut,
    in row order.

    Args:
        timestamps: one numeric timestamp per interaction row.
        valid_fraction: share of rows for validation, in [0, 1).
        test_fraction: share of rows for test, in [0, 1).

    Returns:
        ``x_label`` (int8) per row.
    """
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1
            and valid_fraction + test_fraction < 1):
        raise InputError(f"global_temporal_split: valid_fraction={valid_fraction} and "
                         f"test_fraction={test_fraction} must be in [0, 1) and sum to less than 1")
    timestamps = np.asarray(timestamps)
    n_rows = len(timestamps)
    n_test = int(test_fraction * n_rows)
    n_valid = int(valid_fraction * n_rows)
    rank = np.empty(n_rows, dtype=np.int64)
    rank[np.argsort(timestamps, kind="stable")] = np.arange(n_rows)
    return ((rank >= n_rows - n_test - n_valid).astype(np.int8) + (rank >= n_rows - n_test))
