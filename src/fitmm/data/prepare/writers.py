"""Writing the output folder: the ``.inter`` file, the ID mappings, the feature and mask arrays,
and the manifest that marks the folder as the command's own.

Every file is written through :func:`fitmm.files.atomic_write`: a reader sees the old file or
the new one, never a mixture.

Preparing never destroys a user's files. A command writes only into a folder that does not
exist yet, is empty, or is an earlier output of the same command: a folder holding that
command's manifest (``prepare.json`` for ``fitmm data prepare``, ``encode.json`` for ``fitmm
data encode``), which records the command, its settings and the files it writes. Only the files
an earlier manifest lists are ever replaced or removed (a run without images removes the earlier
run's ``image_feat.npy``/``image_mask.npy`` because the manifest lists them); any other file is
left alone, and a file to be written that exists but is not listed stops the run. The feature
cache (``.feature_cache/``) only ever gains shards; a folder holding nothing but one (moved there
to reuse it) counts as empty. All of this is checked before anything is
written, and the manifest is written before any other file, so the folder of an interrupted run
is still the command's own and a rerun resumes it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fitmm.errors import ParameterError
from fitmm.files import atomic_write, write_json

FEATURE_CACHE_DIR = ".feature_cache"


def feature_files(modality: str) -> list[str]:
    """The files that hold one modality's features: ``<modality>_feat.npy`` and its mask."""
    return [f"{modality}_feat.npy", f"{modality}_mask.npy"]


class OutputFolder:
    """The folder one ``fitmm data`` command writes, claimed by the rule of the module docstring.

    Making one checks that ``command`` (``"prepare"`` or ``"encode"``) may write ``files`` (names
    inside ``path``) there, and raises :class:`ParameterError` for ``out`` if not; nothing is
    written until :meth:`start`.
    """

    def __init__(self, path: Path, command: str, files: Sequence[str]) -> None:
        self.path = path
        self.command = f"fitmm data {command}"
        self.files = list(files)
        self.manifest = path / f"{command}.json"
        self._listed = self._files_listed_before()
        for name in self.files:
            if (path / name).exists() and name not in self._listed:
                raise self._refusal(f"it holds {name}, which its {self.manifest.name} does not "
                                    "list; move that file away or choose an empty or new folder")

    def start(self, settings: dict) -> None:
        """Create the folder, remove the files of the earlier run that this run does not write,
        and write the manifest (command, ``settings``, files)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise self._refusal(f"the folder cannot be made ({error.strerror})") from None
        for name in sorted(self._listed - set(self.files)):
            stale = self.path / name
            if Path(name).name == name and stale.is_file():
                stale.unlink()
        write_json(self.manifest, {"command": self.command, "settings": settings,
                                   "files": self.files, "feature_cache": FEATURE_CACHE_DIR})

    def _files_listed_before(self) -> set[str]:
        """The files the earlier run's manifest lists (none for a new or empty folder)."""
        if not self.path.exists():
            return set()
        if not self.path.is_dir():
            raise self._refusal("not a folder")
        try:  # a folder with nothing but a feature cache (moved in to reuse it) counts as empty
            empty = all(entry.name == FEATURE_CACHE_DIR for entry in self.path.iterdir())
        except OSError as error:
            raise self._refusal(f"the folder cannot be read ({error.strerror})") from None
        if empty:
            return set()
        if not self.manifest.is_file():
            raise self._refusal(f"the folder is not empty and is not an earlier output of "
                                f"{self.command} (it has no {self.manifest.name}); choose an "
                                "empty or new folder")
        try:
            manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise self._refusal(f"its {self.manifest.name} cannot be read ({error}); choose an "
                                "empty or new folder") from None
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if (not isinstance(files, list) or not all(isinstance(name, str) for name in files)
                or manifest.get("command") != self.command):
            raise self._refusal(f"its {self.manifest.name} is not a manifest of {self.command}; "
                                "choose an empty or new folder")
        return set(files)

    def _refusal(self, problem: str) -> ParameterError:
        return ParameterError("out", str(self.path), problem)


def write_inter(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write a tab-separated ``.inter`` file with a header line, columns in ``columns`` order.

    Integer-valued columns are written as integers; others with the shortest exact float text.
    """
    texts = [_column_text(values) for values in columns.values()]
    lines = ["\t".join(columns)] + ["\t".join(row) for row in zip(*texts)]
    atomic_write(path, "\n".join(lines) + "\n")


def write_id_mapping(path: Path, raw_ids: np.ndarray, id_name: str) -> None:
    """Write ``raw_id,<id_name>`` CSV rows: raw ID and its 0-based ID (the row number)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["raw_id", id_name])
    writer.writerows(zip(raw_ids.tolist(), range(len(raw_ids))))
    atomic_write(path, buffer.getvalue())


def save_features(out: Path, modality: str, features: np.ndarray, mask: np.ndarray) -> None:
    """Write ``<modality>_feat.npy`` (float32) and ``<modality>_mask.npy`` (bool) into ``out``."""
    feature_name, mask_name = feature_files(modality)
    atomic_write(out / feature_name, lambda handle: np.save(handle, features.astype(np.float32)))
    atomic_write(out / mask_name, lambda handle: np.save(handle, mask.astype(bool)))


def _column_text(values: np.ndarray) -> list[str]:
    if values.dtype.kind in "iub":
        return values.astype(np.int64).astype(str).tolist()
    if np.all(values == np.round(values)) and np.all(np.abs(values) < 2 ** 53):
        return values.astype(np.int64).astype(str).tolist()
    return [repr(float(value)) for value in values]
