"""``fitmm data prepare``: a raw catalogue (interactions, item metadata, images) → a dataset folder;
``fitmm data encode``: the content features of new items.

The output folder follows the PROTOCOL layout: ``<name>.inter`` (``<name>`` = the folder's
basename), ``u_id_mapping.csv``, ``i_id_mapping.csv`` and, when content is given,
``text_feat.npy``/``text_mask.npy`` and ``image_feat.npy``/``image_mask.npy``, plus the manifest
``prepare.json`` that makes it the command's own.

Pipeline (:mod:`~fitmm.data.prepare.pipeline`), in this order:

1. Check the parameters and the output folder: new, empty, or an earlier output of the same
   command; only files that command wrote are ever replaced or removed
   (:mod:`~fitmm.data.prepare.writers`).
2. Read the interactions and the item metadata (:mod:`~fitmm.data.prepare.readers`: formats,
   columns, timestamps, the text rule), all before anything is written, so bad input leaves no
   half-written folder.
3. Clean: minimum rating, duplicates, iterative k-core, contiguous IDs
   (:mod:`~fitmm.data.prepare.cleaning`).
4. Split (:mod:`~fitmm.data.prepare.splitting`).
5. Write the manifest, the ``.inter`` file and the ID mappings
   (:mod:`~fitmm.data.prepare.writers`).
6. Content features of the remaining items (:mod:`~fitmm.data.prepare.features`), cached per
   item under ``<out>/.feature_cache/`` so a repeated or interrupted run only encodes what is
   missing.

What was read, dropped and written is returned as a report (:mod:`~fitmm.data.prepare.report`).
"""

from fitmm.data.prepare.cleaning import (
    CleanInteractions,
    clean_interactions,
    encode_raw_ids,
    kcore_filter,
    latest_unique,
)
from fitmm.data.prepare.pipeline import encode_new_items, prepare_dataset
from fitmm.data.prepare.readers import (
    DEFAULT_TEXT_FIELDS,
    ITEM_COLUMNS,
    ITEM_ID_COLUMNS,
    RATING_COLUMNS,
    TIME_COLUMNS,
    USER_COLUMNS,
    Interactions,
    item_text,
    read_interactions,
    read_item_texts,
)
from fitmm.data.prepare.report import ModalityReport, NewItemsReport, PrepareReport
from fitmm.data.prepare.splitting import DEFAULT_SEED, SPLITS
from fitmm.data.prepare.writers import FEATURE_CACHE_DIR, write_id_mapping, write_inter

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TEXT_FIELDS",
    "FEATURE_CACHE_DIR",
    "ITEM_COLUMNS",
    "ITEM_ID_COLUMNS",
    "RATING_COLUMNS",
    "SPLITS",
    "TIME_COLUMNS",
    "USER_COLUMNS",
    "CleanInteractions",
    "Interactions",
    "ModalityReport",
    "NewItemsReport",
    "PrepareReport",
    "clean_interactions",
    "encode_new_items",
    "encode_raw_ids",
    "item_text",
    "kcore_filter",
    "latest_unique",
    "prepare_dataset",
    "read_interactions",
    "read_item_texts",
    "write_id_mapping",
    "write_inter",
]
