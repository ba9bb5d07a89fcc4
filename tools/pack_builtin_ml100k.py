"""Rebuild the embedded ``ml100k`` dataset (src/fitmm/data/builtin/ml100k.npz) from ../shared/data/ml100k.

Ships the interactions with their split, the 384-d text features, the 1280-d poster features of the
items that have a poster (only those rows) and the poster mask; features as float16, compressed.
No raw text, titles or posters are shipped.

    python tools/pack_builtin_ml100k.py [SOURCE_FOLDER]
"""

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCE = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "ml100k"
TARGET = REPO / "src" / "fitmm" / "data" / "builtin" / "ml100k.npz"


def main() -> None:
    table = np.loadtxt(SOURCE / "ml100k.inter", delimiter="\t", skiprows=1, dtype=np.int64)
    users, items, labels = table[:, 0], table[:, 1], table[:, 4]
    text = np.load(SOURCE / "text_feat.npy")
    image = np.load(SOURCE / "image_feat_partial.npy")
    image_mask = np.load(SOURCE / "image_mask.npy").astype(bool)
    np.savez_compressed(
        TARGET,
        users=users.astype(np.int32),
        items=items.astype(np.int32),
        labels=labels.astype(np.int8),
        text_features=text.astype(np.float16),
        image_features=image[image_mask].astype(np.float16),
        image_mask=image_mask,
    )
    print(f"wrote {TARGET} ({TARGET.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
