"""Writing files so that a crash never leaves a half-written one: the one atomic-write helper.

Every file fitmm writes for a user (checkpoints, results, dataset folders, feature caches, pages)
goes through :func:`atomic_write`: the content is written to a hidden temporary file beside the
target, flushed to disk, then renamed over the target in one step. A reader sees the old file or
the new one, never a mixture.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, content: bytes | str | Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` with ``content`` atomically.

    ``content`` is bytes, text (written as UTF-8), or a function that writes to the binary
    handle it is given (e.g. ``lambda handle: torch.save(state, handle)``).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with temporary.open("wb") as handle:
            if isinstance(content, str):
                handle.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: str | Path, content) -> None:
    """``content`` as indented JSON (non-ASCII characters kept), written atomically."""
    atomic_write(path, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
