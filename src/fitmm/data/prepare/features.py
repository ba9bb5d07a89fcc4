"""Content features of the items of an output folder, encoded through the per-item cache.

Each modality is encoded by :mod:`fitmm.features` with its cache under
``<out>/.feature_cache/<modality>-<encoder>/``, so a repeated or interrupted run only encodes
what is missing, and written as ``<modality>_feat.npy`` (float32, a zero row where the item has
no content) and ``<modality>_mask.npy`` (bool, True where the row is real content).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitmm.data.prepare.report import ModalityReport
from fitmm.data.prepare.writers import FEATURE_CACHE_DIR, save_features
from fitmm.features import (
    FeatureCache,
    ImageEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    cache_folder_name,
    encode_image_files,
    encode_texts,
    has_text,
    load_image_encoder,
)


def text_encoder_for(encoder: str | TextEncoder, batch_size: int) -> TextEncoder:
    """The encoder itself, or the sentence-transformers model that ``encoder`` names."""
    return SentenceTransformerEncoder(encoder, batch_size) if isinstance(encoder, str) else encoder


def image_encoder_for(encoder: str | ImageEncoder) -> ImageEncoder:
    """The encoder itself, or the image encoder that ``encoder`` names."""
    return load_image_encoder(encoder) if isinstance(encoder, str) else encoder


def write_text_features(out: Path, texts: list[str | None], encoder: TextEncoder, *,
                        batch_size: int, progress: bool) -> ModalityReport:
    """Encode (through the cache) and write ``text_feat.npy``/``text_mask.npy``."""
    cache = FeatureCache(out / FEATURE_CACHE_DIR / cache_folder_name("text", encoder.name))
    encoded = encode_texts(texts, encoder, cache=cache, chunk_size=8 * batch_size,
                           progress=progress)
    save_features(out, "text", encoded.features, encoded.mask)
    return ModalityReport(
        encoder=encoder.name, n_items=len(texts), n_with_content=int(encoded.mask.sum()),
        n_no_content=sum(not has_text(text) for text in texts), n_unreadable=0,
        n_encoded=encoded.n_encoded, n_from_cache=encoded.n_from_cache)


def write_image_features(out: Path, paths: list[Path | None], encoder: ImageEncoder, *,
                         batch_size: int, progress: bool) -> ModalityReport:
    """Encode (through the cache) and write ``image_feat.npy``/``image_mask.npy``."""
    cache = FeatureCache(out / FEATURE_CACHE_DIR / cache_folder_name("image", encoder.name))
    encoded = encode_image_files(paths, encoder, cache=cache, batch_size=batch_size,
                                 progress=progress)
    save_features(out, "image", encoded.features, encoded.mask)
    has_file = np.array([path is not None for path in paths], dtype=bool)
    return ModalityReport(
        encoder=encoder.name, n_items=len(paths), n_with_content=int(encoded.mask.sum()),
        n_no_content=int((~has_file).sum()), n_unreadable=int((has_file & ~encoded.mask).sum()),
        n_encoded=encoded.n_encoded, n_from_cache=encoded.n_from_cache)
