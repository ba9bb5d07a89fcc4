"""Training speed and peak memory per model, and FITMM against its compute floor.

For each dataset, in a fresh process per model (so peak RSS is that model's own):

- training epochs (the trainer's own epoch loop, evaluation excluded): median of ``--epochs``
  epochs; with ``--max-batches N`` on the larger sets, where a whole epoch takes minutes, N batches
  per epoch are timed and the epoch is the median batch time × the number of batches (flagged
  ``"estimated": true``);
- for FITMM, its compute floor: the unavoidable dense work of one epoch, i.e. the content
  projections (Linear(width→256), LeakyReLU, Linear(256→64) per content modality, raw features
  trainable as in FITMM's defaults) forward and backward over all items, once per training batch,
  timed in fp32 and in bf16 (autocast) in the same process;
- for FITMM, also the other work its computation cannot skip, each part alone at FITMM's shapes:
  the user–item propagation of every modality, forward and backward; the batched
  eigen-decomposition of the Gram matrices, with its backward; one fused Adam step over FITMM's
  parameters; and, when the authors' uniformity term is on, that term on the upper bands of one
  batch's distinct users and items, forward and backward. Floor + these parts is a lower bound on
  the epoch however FITMM is written.

The floor and the parts run in the same process, after every timed epoch, as many times as that
epoch timed batches, so that they see the machine's load of the moment; their medians over the
epochs are compared with the median epoch. Peak RSS is read after the first epoch, before the
floor's and the parts' own tensors exist.

ml100k and dataset folders given by path (e.g. datasets/ml1m) use their real features. The Amazon
sets (baby, sports, clothing from ../shared/data) have no features here: random 4096-d image and
384-d text features are made up FOR TIMING ONLY and the JSON labels them so; they say nothing about
accuracy.

Every model is measured in each precision of ``--precisions`` (default fp32,bf16), each in its own
process.

    python benchmarks/training_speed.py [--datasets ml100k,baby] [--models fitmm,lightgcn] [--epochs 3]
                                        [--precisions fp32,bf16] [--max-batches 0] [--out JSON] [--markdown PAGE]

``--markdown`` also writes the rows as a Markdown table (the results suite copies
``benchmarks/results/clothing_scale.md`` onto the results page).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fitmm.data import Modality, load_dataset
from fitmm.graph.adjacency import layer_sum
from fitmm.graph.spectral import band_bases
from fitmm.models.losses import batch_uniformity
from fitmm.training.checkpoints import run_identity
from fitmm.training.precision import autocast
from fitmm.training.runs import build_model
from fitmm.training.settings import parse_overrides, resolve_settings
from fitmm.training.trainer import Trainer, peak_rss_mb

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MADE_UP_WIDTHS = {"image": 4096, "text": 384}


def load(name: str):
    """A dataset to time: the built-in ml100k or a dataset folder by path (their own features), or an
    Amazon set of ../shared/data by name (with made-up features)."""
    if name == "ml100k" or Path(name).is_dir():
        return load_dataset(name), False
    data = load_dataset(SHARED / name)
    generator = np.random.default_rng(0)
    data.modalities = {
        modality: Modality(
            features=generator.standard_normal((data.n_items, width), dtype=np.float32),
            mask=np.ones(data.n_items, dtype=bool),
        )
        for modality, width in MADE_UP_WIDTHS.items()
    }
    return data, True


class TimedTrainer(Trainer):
    """The trainer's epoch loop, timing each batch and stopping after ``max_batches`` if set."""

    def __init__(self, *args, max_batches: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_batches = max_batches

    def timed_epoch(self, epoch: int) -> list[float]:
        self.model.on_epoch_start(epoch)
        self.model.train()
        seconds = []
        started = time.perf_counter()
        for users, positives, negatives in self.sampler.batches(self.settings.batch_size, self.model.uses_negatives):
            self.step(users, positives, negatives)
            now = time.perf_counter()
            seconds.append(now - started)
            started = now
            if self.max_batches and len(seconds) == self.max_batches:
                break
        self.model.on_epoch_end(epoch)
        return seconds


def floor_work(data, hyperparameters, precision: str):
    """One batch's share of the floor: the content projections' forward + backward over all items,
    in ``precision`` (bf16: under autocast, as a bf16 training step runs them)."""
    torch.manual_seed(0)
    tables, projections = [], []
    for name in hyperparameters.content_modalities:
        if name in data.modalities:
            table = nn.Parameter(torch.from_numpy(data.modalities[name].features.copy()))
            tables.append(table)
            projections.append(nn.Sequential(nn.Linear(table.shape[1], hyperparameters.hidden_size), nn.LeakyReLU(),
                                              nn.Linear(hyperparameters.hidden_size, hyperparameters.embedding_size)))

    def projections_forward_backward():
        with autocast(precision, "cpu"):
            total = sum(projection(table).float().sum() for projection, table in zip(projections, tables))
        total.backward()

    return projections_forward_backward


def required_work(trainer: Trainer) -> dict:
    """One batch's share of each part of FITMM's step that any implementation of it must do besides
    the floor, alone at the model's shapes (see the module docstring)."""
    model = trainer.model
    generator = torch.Generator().manual_seed(0)
    width = len(model.modalities) * model.d
    nodes = torch.randn(model.n_users + model.n_items, width, generator=generator, requires_grad=True)

    def propagation():
        layer_sum(model.adjacency, nodes, model.n_layers).sum().backward()

    parameters = [nn.Parameter(torch.zeros_like(p)) for p in model.parameters()]
    for parameter in parameters:
        parameter.grad = torch.randn(parameter.shape, generator=generator)
    optimizer = torch.optim.Adam(parameters, lr=trainer.settings.learning_rate, fused=True)
    parts = {"propagation": propagation, "optimizer": optimizer.step}
    if model.n_bands > 1:
        square = torch.randn(2, 2, len(model.modalities), model.d, model.d, generator=generator, dtype=torch.float64)
        grams = (square @ square.mT).float().requires_grad_()
        parts["eigen_decomposition"] = lambda: band_bases(grams, model.n_bands).sum().backward()
    if model.uniformity:
        users, positives, _ = next(iter(trainer.sampler.batches(trainer.settings.batch_size, False)))
        batch = []
        for rows in (users, positives):
            counts = torch.unique(rows, return_counts=True)[1]
            z = nn.functional.normalize(torch.randn(counts.numel(), width, generator=generator), dim=1)
            batch.append((z.requires_grad_(), counts))
        upper_bands = model.n_bands - model.n_bands // 2

        def uniformity():
            sum(batch_uniformity(z, counts) for z, counts in batch for _ in range(upper_bands)).backward()

        parts["uniformity"] = uniformity
    return parts


def seconds_of(work, calls: int) -> float:
    """Wall time of ``calls`` calls of ``work()``."""
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return time.perf_counter() - started


def measure(dataset: str, model: str, epochs: int, max_batches: int, settings: dict) -> dict:
    data, made_up = load(dataset)
    run = resolve_settings(model, overrides={**settings, "epochs": epochs, "checkpoint_every": 0})
    identity = run_identity(model, run.as_dict(), data.fingerprint)
    trainer = TimedTrainer(build_model(run, data), data, run.training, Path("."), identity, progress=False,
                           max_batches=max_batches)
    n_batches = trainer.sampler.n_batches(run.training.batch_size)
    # FITMM's floors (fp32 and bf16) and required parts are timed after every epoch, as many calls as
    # batches were timed, so that they see the same machine load as the epochs they are compared
    # with. They are built after the first epoch, once the training's peak RSS has been read.
    timed_parts = model == "fitmm" and set(run.hyperparameters.content_modalities) & set(data.modalities)
    parts, part_seconds = {}, {}
    epoch_seconds, batch_seconds = [], []
    for epoch in range(epochs):
        seconds = trainer.timed_epoch(epoch)
        batch_seconds += seconds
        epoch_seconds.append(sum(seconds) if len(seconds) == n_batches else statistics.median(seconds) * n_batches)
        if epoch == 0:
            peak_rss = peak_rss_mb()
            if timed_parts:
                parts = {"floor": floor_work(data, run.hyperparameters, "fp32"),
                         "floor_bf16": floor_work(data, run.hyperparameters, "bf16"), **required_work(trainer)}
                for work in parts.values():
                    work()  # warm-up
        for name, work in parts.items():
            part_seconds.setdefault(name, []).append(seconds_of(work, len(seconds)) / len(seconds) * n_batches)
    result = {
        "dataset": dataset, "model": model, "settings": settings, "precision": run.training.precision,
        "users": data.n_users, "items": data.n_items,
        "train_interactions": int(data.train.nnz), "batches_per_epoch": n_batches,
        "features": ("made up, timing only: " if made_up else "real: ")
        + ", ".join(f"{k} {m.width}-d" for k, m in data.modalities.items()),
        "estimated": bool(max_batches) and max_batches < n_batches,
        "epoch_seconds": epoch_seconds, "median_epoch_seconds": statistics.median(epoch_seconds),
        "median_batch_seconds": statistics.median(batch_seconds),
        "peak_rss_mb": peak_rss,
    }
    if parts:
        medians = {name: statistics.median(seconds) for name, seconds in part_seconds.items()}
        floor = medians.pop("floor")
        result["floor_epoch_seconds"] = floor
        result["floor_bf16_epoch_seconds"] = medians.pop("floor_bf16")
        result["epoch_over_floor"] = result["median_epoch_seconds"] / floor
        result["required_beyond_floor_epoch_seconds"] = medians
        result["floor_and_required_over_floor"] = (floor + sum(medians.values())) / floor
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml100k,baby,sports,clothing")
    parser.add_argument("--models", default="fitmm,lightgcn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-batches", type=int, default=0,
                        help="time at most this many batches per epoch on the Amazon sets (0 = all)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "training_speed.json"))
    parser.add_argument("--markdown", help="also write the rows as a Markdown table to this file")
    parser.add_argument("--precisions", default="fp32,bf16", help="each model is measured in each of these")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a model setting for every measured model (repeatable), e.g. preset=paper")
    parser.add_argument("--child", nargs=2, metavar=("DATASET", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dataset, model = args.child
        limit = 0 if dataset == "ml100k" else args.max_batches
        print(json.dumps(measure(dataset, model, args.epochs, limit, parse_overrides(args.set))))
        return
    rows = []
    runs = [(dataset, model, precision) for dataset in args.datasets.split(",") for model in args.models.split(",")
            for precision in args.precisions.split(",")]
    for dataset, model, precision in runs:
        completed = subprocess.run(
            [sys.executable, __file__, "--child", dataset, model, "--epochs", str(args.epochs),
             "--max-batches", str(args.max_batches), *(f"--set={item}" for item in args.set),
             f"--set=precision={precision}"],
            capture_output=True, text=True, check=True)
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        rows.append(row)
        floor = ""
        if "floor_epoch_seconds" in row:
            required = ", ".join(f"{name} {seconds:.2f} s"
                                 for name, seconds in row["required_beyond_floor_epoch_seconds"].items())
            floor = (f", fp32 floor {row['floor_epoch_seconds']:.2f} s ({row['epoch_over_floor']:.2f}×), bf16 floor "
                     f"{row['floor_bf16_epoch_seconds']:.2f} s; required beyond it: {required} (floor + these = "
                     f"{row['floor_and_required_over_floor']:.2f}× the fp32 floor)")
        print(f"{dataset:<9} {model:<9} {precision} epoch {row['median_epoch_seconds']:.2f} s"
              f"{' (est.)' if row['estimated'] else ''}{floor}, peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    report = {"benchmark": "training_speed", "torch_threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown_table(report))


def markdown_table(report: dict) -> str:
    """The benchmark's rows as a Markdown section: epoch time, peak RSS, and FITMM's floor ratio."""
    rows = report["results"]
    lines = [
        "## Training speed and memory", "",
        f"`benchmarks/training_speed.py`, one process per model, {report['torch_threads']} PyTorch thread(s); "
        "epoch = training only (evaluation excluded), median over the timed epochs; \"est.\" = the median "
        "batch time × batches per epoch. Features marked made up are random, for timing only. The last "
        "column is the floor plus the other parts FITMM cannot skip (propagation, eigen-decomposition, "
        "optimizer step, the authors' uniformity term), each timed alone: a lower bound on the epoch.", "",
        "| dataset | users × items | training pairs | features | model | precision | epoch (s) | peak RSS (MB) "
        "| FITMM / fp32 floor | bf16 floor / fp32 floor | floor + required parts / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        epoch = f"{row['median_epoch_seconds']:.1f}" + (" (est.)" if row["estimated"] else "")
        floor, bf16_floor, required = "–", "–", "–"
        if "floor_epoch_seconds" in row:
            floor = f"{row['epoch_over_floor']:.2f}× ({row['floor_epoch_seconds']:.1f} s)"
            bf16_floor = f"{row['floor_bf16_epoch_seconds'] / row['floor_epoch_seconds']:.2f}×"
            required = f"{row['floor_and_required_over_floor']:.2f}×"
        settings = "".join(f" {key}={value}" for key, value in row.get("settings", {}).items() if key != "precision")
        lines.append(f"| {row['dataset']} | {row['users']:,} × {row['items']:,} | {row['train_interactions']:,} | "
                     f"{row['features']} | `{row['model']}`{settings} | {row['precision']} | {epoch} | "
                     f"{row['peak_rss_mb']:,.0f} | {floor} | {bf16_floor} | {required} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
