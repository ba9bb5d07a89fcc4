"""Cleaning the interaction rows read (vectorised numpy), in this order:

1. ``min_rating``: keep rows with rating ≥ R.
2. Duplicates (same user and item): keep the latest row (largest timestamp; among equal
   timestamps, or without timestamps, the last row of the file); the others are counted.
3. Iterative k-core: drop users and items with fewer than k interactions until none is left.
4. Contiguous 0-based IDs, users and items each numbered in raw-ID sort order: numeric order
   when every raw ID of that kind is a plain integer (``"7"`` before ``"10"``), otherwise
   string (Unicode code point) order. The kept rows are ordered by (userID, itemID).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitmm.data.prepare.readers import Interactions


@dataclass
class CleanInteractions:
    """The rows kept by :func:`clean_interactions`, their contiguous IDs, and what was dropped."""

    rows: np.ndarray  # (n,) indices of the kept rows in the table read, in (user, item) order
    users: np.ndarray  # (n,) contiguous user ID of each kept row
    items: np.ndarray  # (n,) contiguous item ID of each kept row
    raw_user_ids: np.ndarray  # (n_users,) str: the raw ID of each user ID
    raw_item_ids: np.ndarray  # (n_items,) str: the raw ID of each item ID
    dropped_below_min_rating: int
    dropped_duplicates: int
    dropped_kcore: int
    kcore_rounds: int


def clean_interactions(table: Interactions, *, min_rating: float | None,
                       k_core: int) -> CleanInteractions:
    """Steps 1–4 of the module docstring on ``table`` (``min_rating`` needs its ratings).

    Every row may be dropped: the result then has no rows, and the caller says why.
    """
    rows_read = len(table.users)
    rows = np.arange(rows_read)
    if min_rating is not None:
        rows = rows[table.ratings >= min_rating]
    dropped_rating = rows_read - len(rows)

    user_codes, user_raw = encode_raw_ids(table.users)
    item_codes, item_raw = encode_raw_ids(table.items)
    timestamps = table.timestamps[rows] if table.timestamps is not None else None
    latest = latest_unique(user_codes[rows], item_codes[rows], timestamps)
    dropped_duplicates = len(rows) - int(latest.sum())
    rows = rows[latest]

    core, rounds = kcore_filter(user_codes[rows], item_codes[rows], k_core)
    dropped_kcore = len(rows) - int(core.sum())
    rows = rows[core]

    kept_users, users = np.unique(user_codes[rows], return_inverse=True)
    kept_items, items = np.unique(item_codes[rows], return_inverse=True)
    order = np.lexsort((items, users))
    return CleanInteractions(
        rows=rows[order], users=users[order], items=items[order],
        raw_user_ids=user_raw[kept_users], raw_item_ids=item_raw[kept_items],
        dropped_below_min_rating=dropped_rating, dropped_duplicates=dropped_duplicates,
        dropped_kcore=dropped_kcore, kcore_rounds=rounds)


def encode_raw_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``0..U-1`` for raw ID strings, numbered in raw-ID sort order.

    The order is numeric when every distinct ID is a plain integer written canonically (no
    leading zeros or signs other than "-"), otherwise string order.

    Returns:
        ``(codes, uniques)``: ``uniques[codes] == raw``, with ``uniques`` in that order.
    """
    uniques, codes = np.unique(np.asarray(raw, dtype=str), return_inverse=True)
    try:
        numbers = uniques.astype(np.int64)
    except (ValueError, OverflowError):
        return codes, uniques
    if not np.array_equal(numbers.astype(str), uniques):
        return codes, uniques
    numeric_order = np.argsort(numbers, kind="stable")
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[numeric_order] = np.arange(len(uniques))
    return rank[codes], uniques[numeric_order]


def latest_unique(users: np.ndarray, items: np.ndarray,
                  timestamps: np.ndarray | None) -> np.ndarray:
    """Mask keeping one row per (user, item): the latest by timestamp, ties (or no timestamps)
    broken by the last row."""
    keep = np.zeros(len(users), dtype=bool)
    if len(users) == 0:
        return keep
    row = np.arange(len(users))
    sort_keys = (row, items, users) if timestamps is None else (row, timestamps, items, users)
    order = np.lexsort(sort_keys)
    sorted_users, sorted_items = users[order], items[order]
    last_of_pair = np.r_[(sorted_users[1:] != sorted_users[:-1])
                         | (sorted_items[1:] != sorted_items[:-1]), True]
    keep[order[last_of_pair]] = True
    return keep


def kcore_filter(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Iterative k-core on the user–item graph given as non-negative integer code arrays.

    Each round counts every user's and item's interactions among the remaining rows
    (``numpy.bincount``) and drops the rows of users or items with fewer than ``k``; rounds
    repeat until a round drops nothing. The result is the unique largest subgraph in which every
    user and item has at least ``k`` interactions (empty if there is none).

    Returns:
        ``(keep, rounds)``: the row mask and the number of rounds run (the last one drops
        nothing).
    """
    remaining = np.arange(len(users))
    rounds = 0
    while True:
        rounds += 1
        user_of, item_of = users[remaining], items[remaining]
        enough = (np.bincount(user_of)[user_of] >= k) & (np.bincount(item_of)[item_of] >= k)
        if enough.all():
            break
        remaining = remaining[enough]
    keep = np.zeros(len(users), dtype=bool)
    keep[remaining] = True
    return keep, rounds
