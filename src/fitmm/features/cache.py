"""Per-item feature cache and the cache-aware encoding loop shared by text and image features.

A cache folder belongs to one encoder (``<dataset>/.feature_cache/<modality>-<encoder>/``). It
holds shards ``shard-*.npz``, each with ``keys`` (``(n, 32)`` uint8: SHA-256 digests) and
``features`` (``(n, dim)`` float32). An item's key is the digest of the encoder name and the
item's content (the text's UTF-8 bytes or the image file's bytes), so an edited text or a
replaced image is encoded again while everything unchanged is reused. Each shard is written with
:func:`fitmm.files.atomic_write`, so an interrupted run leaves only complete shards and a rerun
encodes only what is still missing. A shard that cannot be read is ignored (its items are
encoded again).
"""

from __future__ import annotations

import hashlib
import re
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fitmm.files import atomic_write

KEY_BYTES = 32


def content_key(encoder_name: str, content: bytes) -> bytes:
    """The cache key of one item: SHA-256 of the encoder name, a NUL byte and the content."""
    return hashlib.sha256(encoder_name.encode("utf-8") + b"\0" + content).digest()


def cache_folder_name(modality: str, encoder_name: str) -> str:
    """A file-system-safe folder name for ``modality`` features of ``encoder_name``.

    Readable characters of the name are kept; a short digest of the full name keeps two names
    that sanitise alike (e.g. two model paths) apart.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name).strip("_")[-60:]
    digest = hashlib.sha256(encoder_name.encode("utf-8")).hexdigest()[:8]
    return f"{modality}-{readable}-{digest}"


class FeatureCache:
    """Feature rows of one encoder, keyed by :func:`content_key`, stored as npz shards."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._rows: dict[bytes, np.ndarray] = {}
        for shard in sorted(self.folder.glob("shard-*.npz")):
            try:
                with np.load(shard) as data:
                    keys, features = data["keys"], data["features"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                continue
            for key, row in zip(keys, features):
                self._rows[key.tobytes()] = row

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: bytes) -> np.ndarray | None:
        """The cached feature row for ``key``, or None."""
        return self._rows.get(key)

    def put(self, keys: Sequence[bytes], features: np.ndarray) -> None:
        """Store ``features[i]`` under ``keys[i]``: one new shard, written atomically."""
        if not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        features = np.ascontiguousarray(features, dtype=np.float32)
        name = f"shard-{len(list(self.folder.glob('shard-*.npz'))):06d}-{uuid.uuid4().hex[:8]}.npz"
        atomic_write(self.folder / name,
                     lambda handle: np.savez(handle, keys=key_array, features=features))
        for key, row in zip(keys, features):
            self._rows[key] = row


@dataclass
class EncodedFeatures:
    """Features of every item of one modality, with what was encoded and what was reused."""

    features: np.ndarray  # (n_items, dim) float32; zero rows where mask is False
    mask: np.ndarray  # (n_items,) bool: True where the row is real content
    n_encoded: int  # items run through the encoder by this call
    n_from_cache: int  # items whose row came from the cache


ChunkEncoder = Callable[[list[int]], tuple[np.ndarray, np.ndarray]]


def encode_with_cache(keys: Sequence[bytes | None], encode_chunk: ChunkEncoder, *,
                      dim: Callable[[], int], cache: FeatureCache | None, chunk_size: int,
                      progress: bool, desc: str) -> EncodedFeatures:
    """Build the feature table of ``len(keys)`` items, encoding only what the cache lacks.

    Args:
        keys: per item, its :func:`content_key`, or None when the item has no content.
        encode_chunk: given item indices, returns ``(features, ok)``: ``ok`` (bool, one per
            index) tells which items could be encoded and ``features`` holds their rows, in
            order.
        dim: returns the feature width; called only when no row was produced or cached (so an
            encoder need not be loaded just to learn its width).
        cache: where rows are looked up and new rows stored, or None for no caching.
        chunk_size: items per ``encode_chunk`` call; each chunk becomes one cache shard.
        progress: show a tqdm progress bar over the items to encode.
        desc: label of the progress bar.
    """
    n_items = len(keys)
    rows: dict[int, np.ndarray] = {}
    to_encode: list[int] = []
    for index, key in enumerate(keys):
        if key is None:
            continue
        cached = cache.get(key) if cache is not None else None
        if cached is None:
            to_encode.append(index)
        else:
            rows[index] = cached
    n_from_cache = len(rows)
    n_failed = 0
    with tqdm(total=len(to_encode), desc=desc, unit="item", disable=not progress) as bar:
        for start in range(0, len(to_encode), chunk_size):
            chunk = to_encode[start:start + chunk_size]
            features, ok = encode_chunk(chunk)
            encoded = [index for index, good in zip(chunk, ok) if good]
            n_failed += len(chunk) - len(encoded)
            rows.update(zip(encoded, features))
            if cache is not None:
                cache.put([keys[index] for index in encoded], features)
            bar.update(len(chunk))
    width = len(next(iter(rows.values()))) if rows else dim()
    table = np.zeros((n_items, width), dtype=np.float32)
    mask = np.zeros(n_items, dtype=bool)
    if rows:
        indices = np.fromiter(rows.keys(), dtype=np.int64, count=len(rows))
        table[indices] = np.stack(list(rows.values()))
        mask[indices] = True
    return EncodedFeatures(features=table, mask=mask, n_encoded=len(to_encode) - n_failed,
                           n_from_cache=n_from_cache)
