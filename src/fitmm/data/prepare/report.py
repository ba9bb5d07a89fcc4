"""What ``fitmm data prepare`` and ``fitmm data encode`` did: the reports and their summary text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fitmm.data.prepare.splitting import SPLIT_NAMES


@dataclass
class ModalityReport:
    """Content coverage of one modality after preparation."""

    encoder: str
    n_items: int
    n_with_content: int  # rows that are real features (mask True)
    n_no_content: int  # items with no text, or no image file
    n_unreadable: int  # image files that exist but could not be read or decoded
    n_encoded: int  # items run through the encoder in this run
    n_from_cache: int  # items whose features came from the feature cache

    @property
    def coverage(self) -> float:
        return self.n_with_content / self.n_items if self.n_items else 0.0


@dataclass
class PrepareReport:
    """What :func:`~fitmm.data.prepare.prepare_dataset` read, dropped (and why), kept and wrote."""

    out: Path
    rows_read: int
    dropped_below_min_rating: int
    dropped_duplicates: int
    dropped_kcore: int
    kcore_rounds: int
    n_users: int
    n_items: int
    n_interactions: int
    split: str
    split_sizes: dict[str, int]
    k_core: int
    min_rating: float | None
    seed: int
    text: ModalityReport | None = None
    image: ModalityReport | None = None

    def summary(self) -> str:
        """A human-readable multi-line summary (printed by ``fitmm data prepare``)."""
        lines = [
            f"prepared dataset {self.out.name!r} in {self.out}",
            f"rows read: {self.rows_read:,}",
            f"dropped below min rating: {self.dropped_below_min_rating:,}"
            + (f" (rating < {self.min_rating:g})" if self.min_rating is not None
               else " (no min rating)"),
            f"dropped duplicates (same user and item, latest kept): {self.dropped_duplicates:,}",
            f"dropped by {self.k_core}-core: {self.dropped_kcore:,} "
            f"({self.kcore_rounds} rounds)",
            f"users {self.n_users:,}, items {self.n_items:,}, interactions "
            f"{self.n_interactions:,}",
            f"split {self.split}" + (f" (seed {self.seed})" if self.split == "random" else "")
            + ": "
            + ", ".join(f"{name} {self.split_sizes[name]:,}" for name in SPLIT_NAMES),
        ]
        return "\n".join(lines + _content_lines(self.text, self.image))


@dataclass
class NewItemsReport:
    """What :func:`~fitmm.data.prepare.encode_new_items` wrote: content features of items
    outside any dataset."""

    out: Path
    n_items: int
    text: ModalityReport | None = None
    image: ModalityReport | None = None

    def summary(self) -> str:
        """A human-readable multi-line summary (printed by ``fitmm data encode``)."""
        lines = [f"encoded {self.n_items:,} new items into {self.out} (row order: i_id_mapping.csv)"]
        return "\n".join(lines + _content_lines(self.text, self.image))


def _content_lines(text: ModalityReport | None, image: ModalityReport | None) -> list[str]:
    """One summary line per modality: coverage, what lacks content and why, cache use."""
    lines = []
    for modality, report in (("text", text), ("image", image)):
        if report is None:
            lines.append(f"{modality} features: not built")
            continue
        lacking = (f"{report.n_no_content:,} without text" if modality == "text" else
                   f"{report.n_no_content:,} without an image file, "
                   f"{report.n_unreadable:,} unreadable")
        lines.append(
            f"{modality} features ({report.encoder}): {report.n_with_content:,}/"
            f"{report.n_items:,} items ({report.coverage:.1%}); {lacking}; "
            f"encoded {report.n_encoded:,}, from cache {report.n_from_cache:,}")
    return lines
