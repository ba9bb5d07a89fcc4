"""fitmm's own files: written so that a crash never leaves a half-written one, read back with a
one-line error for a damaged one.

Every file fitmm writes for a user (checkpoints, results, dataset folders, feature caches, pages)
goes through :func:`atomic_write`: the content is written to a hidden temporary file beside the
target, flushed to disk, then renamed over the target in one step. A reader sees the old file or
the new one, never a mixture. Its JSON files (results, summaries, manifests) are read back with
:func:`read_json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fitmm.errors import InputError


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


def read_json(path: str | Path) -> dict:
    """A JSON object written by fitmm; a missing, unreadable, malformed or non-object file is an
    InputError naming it."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: not valid JSON (truncated or corrupt)") from None
    if not isinstance(content, dict):
        raise InputError(f"{path}: not a fitmm file (expected a JSON object)")
    return content


def write_json(path: str | Path, content) -> None:
    """``content`` as indented JSON (non-ASCII characters kept), written atomically."""
    atomic_write(path, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
