"""A dataset's fingerprint: what a run was trained on, so that a changed dataset is noticed.

The fingerprint records, for every file the loader read (the ``.inter`` file, feature and mask
files, ID mappings; the packaged archive of a built-in dataset), its size and SHA-256, plus the
user and item counts. A run stores the fingerprint of its dataset; every command that loads the
run recomputes it and compares (:func:`fingerprint_difference`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def file_digest(path: Path) -> dict:
    """``{"bytes": size, "sha256": hex digest}`` of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def dataset_fingerprint(files: Iterable[Path], n_users: int, n_items: int) -> dict:
    """The fingerprint of a dataset read from ``files`` (keyed by file name)."""
    return {"files": {path.name: file_digest(path) for path in sorted(files, key=lambda p: p.name)},
            "users": n_users, "items": n_items}


def fingerprint_difference(recorded: dict, current: dict) -> str | None:
    """What changed between two fingerprints, as a short phrase; None when they are equal."""
    changes = []
    for name in sorted(set(recorded["files"]) | set(current["files"])):
        before, after = recorded["files"].get(name), current["files"].get(name)
        if before is None:
            changes.append(f"{name} is new")
        elif after is None:
            changes.append(f"{name} is gone")
        elif before != after:
            sizes = (f"size {before['bytes']:,} → {after['bytes']:,} bytes" if before["bytes"] != after["bytes"]
                     else f"same size ({after['bytes']:,} bytes), different content")
            changes.append(f"{name} changed ({sizes})")
    for count in ("users", "items"):
        if recorded[count] != current[count]:
            changes.append(f"{recorded[count]:,} → {current[count]:,} {count}")
    return "; ".join(changes) or None
