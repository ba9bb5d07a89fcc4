"""Shared fixtures: the ../shared data folder and small synthetic dataset folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = SHARED / "data"
    if not folder.is_dir():
        pytest.skip(f"the shared data folder {folder} is not present beside the repository")
    return folder


def write_inter(folder: Path, rows: list[tuple[int, int, int]], header: str = "userID\titemID\tx_label") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{folder.name}.inter"
    lines = [header] + ["\t".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def small_rows(n_users: int = 6, n_items: int = 8, seed: int = 0) -> list[tuple[int, int, int]]:
    """Every user has 4 training items, one validation item and one test item."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        items = rng.choice(n_items, size=6, replace=False)
        rows += [(user, int(i), 0) for i in items[:4]]
        rows += [(user, int(items[4]), 1), (user, int(items[5]), 2)]
    return rows


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "small"
    rows = small_rows()
    write_inter(folder, rows)
    n_items = max(r[1] for r in rows) + 1
    np.save(folder / "text_feat.npy", np.random.default_rng(1).normal(size=(n_items, 5)).astype(np.float32))
    return folder
