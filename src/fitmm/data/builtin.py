"""Datasets embedded in the package, usable by name with no download.

``ml100k``: MovieLens-100K (GroupLens) interactions with their random split, all-MiniLM-L6-v2
text features of each movie's description (384-d) and EfficientNet-Lite0 features of the 466
movie posters that could be found (1280-d; the other items have no image, as their mask says).
Features are stored as float16 and restored to float32. Raw IDs are MovieLens's own: the
``.inter`` numbers are MovieLens IDs minus one, for users and items alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitmm.data.dataset import Dataset, Modality
from fitmm.data.fingerprint import dataset_fingerprint

BUILTIN_FOLDER = Path(__file__).with_name("builtin")

DESCRIPTIONS = {
    "ml100k": "MovieLens-100K: 943 users, 1,682 movies, 100k ratings as implicit feedback; "
    "text (384-d MiniLM) for every movie, poster image (1280-d EfficientNet-Lite0) for 466",
}


def builtin_names() -> list[str]:
    return sorted(DESCRIPTIONS)


def load_builtin(name: str) -> Dataset:
    archive_path = BUILTIN_FOLDER / f"{name}.npz"
    with np.load(archive_path) as archive:
        users = archive["users"].astype(np.int64)
        items = archive["items"].astype(np.int64)
        labels = archive["labels"].astype(np.int64)
        text = archive["text_features"].astype(np.float32)
        image_mask = archive["image_mask"]
        image = np.zeros((image_mask.size, archive["image_features"].shape[1]), dtype=np.float32)
        image[image_mask] = archive["image_features"].astype(np.float32)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    return Dataset(
        name=name,
        n_users=n_users,
        n_items=n_items,
        users=users,
        items=items,
        labels=labels,
        modalities={
            "image": Modality(features=image, mask=image_mask),
            "text": Modality(features=text, mask=np.ones(n_items, dtype=bool)),
        },
        raw_user_ids=(np.arange(n_users) + 1).astype(str),
        raw_item_ids=(np.arange(n_items) + 1).astype(str),
        fingerprint=dataset_fingerprint([archive_path], n_users, n_items),
    )
