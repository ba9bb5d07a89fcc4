"""Data: loading and validating dataset folders, built-in datasets, splitting, preparation."""

from __future__ import annotations

from pathlib import Path

from fitmm.data.builtin import builtin_names, load_builtin
from fitmm.data.dataset import Dataset, Modality, NewItems, load_folder, load_new_items


def load_dataset(name_or_path: str | Path) -> Dataset:
    """A built-in dataset by name (``fitmm datasets`` lists them) or a dataset folder by path."""
    if isinstance(name_or_path, str) and name_or_path in builtin_names():
        return load_builtin(name_or_path)
    return load_folder(name_or_path)


__all__ = ["Dataset", "Modality", "NewItems", "builtin_names", "load_dataset", "load_new_items"]
