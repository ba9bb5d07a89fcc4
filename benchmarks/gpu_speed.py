"""Every model's training epoch and peak memory at Clothing shapes in fp32 and bf16, on one device,
and FITMM on ml100k trained to early stopping (``benchmarks/gpu.sh`` runs it on a CUDA GPU).

Clothing shapes: the interactions of ``../shared/data/clothing`` when that folder is beside the
repository, otherwise synthetic ones with its counts (39,387 users, 23,033 items, 278,677
interactions, every user with at least 5, item popularity Zipf-like, the random per-user split);
image (4096-d) and text (384-d) features are random, made up for timing only. An epoch is the
median batch time of ``--max-batches`` timed batches (after ``--warmup-batches``) × the batches
of an epoch, with the device synchronised around each batch; peak memory is the device's
(``torch.cuda.max_memory_allocated``; on the CPU, the process's peak RSS).

    python benchmarks/gpu_speed.py [--device cuda] [--models ...] [--precisions fp32,bf16]
                                   [--max-batches 20] [--scale 1.0] [--out JSON] [--markdown PAGE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import fitmm
from fitmm.data import Dataset, Modality, load_dataset
from fitmm.data.prepare.splitting import mmrec_random_split
from fitmm.errors import InputError
from fitmm.training.checkpoints import run_identity
from fitmm.training.precision import check_precision
from fitmm.training.runs import build_model
from fitmm.training.settings import resolve_settings
from fitmm.training.trainer import Trainer, peak_rss_mb

SHARED_CLOTHING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clothing"
CLOTHING = {"users": 39_387, "items": 23_033, "interactions": 278_677}
MADE_UP_WIDTHS = {"image": 4096, "text": 384}


def clothing_shapes(scale: float) -> Dataset:
    """Clothing's interactions (or synthetic ones with its counts, × ``scale``) with made-up features."""
    if scale == 1.0 and SHARED_CLOTHING.is_dir():
        data = load_dataset(SHARED_CLOTHING)
    else:
        generator = np.random.default_rng(0)
        n_users, n_items = round(CLOTHING["users"] * scale), round(CLOTHING["items"] * scale)
        per_user = 5 + generator.geometric(1 / (CLOTHING["interactions"] / CLOTHING["users"] - 4), n_users) - 1
        popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
        popularity /= popularity.sum()
        users = np.repeat(np.arange(n_users), per_user)
        items = np.concatenate([generator.choice(n_items, size=min(count, n_items), replace=False, p=popularity)
                                for count in per_user])
        users = users[: len(items)]
        data = Dataset(name="clothing-shapes", n_users=n_users, n_items=n_items, users=users, items=items,
                       labels=mmrec_random_split(users, 999).astype(np.int64))
    generator = np.random.default_rng(1)
    data.modalities = {name: Modality(generator.standard_normal((data.n_items, width), dtype=np.float32),
                                      np.ones(data.n_items, dtype=bool)) for name, width in MADE_UP_WIDTHS.items()}
    return data


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_epoch(data: Dataset, model: str, precision: str, device: str, warmup: int, batches: int) -> dict:
    run = resolve_settings(model, overrides={"device": device, "precision": precision, "checkpoint_every": 0})
    identity = run_identity(model, run.as_dict(), data.fingerprint)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(build_model(run, data), data, run.training, Path(scratch), identity, progress=False)
        if not trainer.model.trainable:
            return {"model": model, "precision": precision, "trainable": False}
        trainer.model.on_epoch_start(0)
        trainer.model.train()
        seconds = []
        for index, (users, positives, negatives) in enumerate(
                trainer.sampler.batches(run.training.batch_size, trainer.model.uses_negatives)):
            synchronise(trainer.device)
            started = time.perf_counter()
            trainer.step(users, positives, negatives)
            synchronise(trainer.device)
            if index >= warmup:
                seconds.append(time.perf_counter() - started)
            if len(seconds) == batches:
                break
        n_batches = trainer.sampler.n_batches(run.training.batch_size)
        memory = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()
    return {"model": model, "precision": precision, "batches_per_epoch": n_batches, "timed_batches": len(seconds),
            "median_batch_seconds": statistics.median(seconds),
            "epoch_seconds": statistics.median(seconds) * n_batches, "peak_memory_mb": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="mf,lightgcn,vbpr,lattice,freedom,bm3,mgcn,lgmrec,smore,fitmm")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--max-batches", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the Clothing shapes (for a quick check)")
    parser.add_argument("--fitmm-epochs", type=int, default=300, help="epoch limit of the ml100k FITMM training")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "gpu.json"))
    parser.add_argument("--markdown", help="also write the table as Markdown here")
    args = parser.parse_args()
    started = time.perf_counter()
    data = clothing_shapes(args.scale)
    rows = []
    for precision in args.precisions.split(","):
        try:
            check_precision(precision, args.device)
        except InputError as error:
            print(f"skipping {precision}: {error}")
            continue
        for model in args.models.split(","):
            rows.append(time_epoch(data, model, precision, args.device, args.warmup_batches, args.max_batches))
            row = rows[-1]
            if row.get("trainable", True):
                print(f"{model:<9} {precision}: epoch {row['epoch_seconds']:.2f} s (median batch "
                      f"{row['median_batch_seconds'] * 1000:.1f} ms × {row['batches_per_epoch']}), peak "
                      f"{row['peak_memory_mb']:.0f} MB", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        trained = time.perf_counter()
        result = fitmm.train("fitmm", "ml100k", Path(scratch) / "fitmm", device=args.device,
                             epochs=args.fitmm_epochs, progress=False)
        fitmm_ml100k = {"test_recall@20": result["test"]["recall@20"], "best_epoch": result["best_epoch"],
                        "epochs_run": result["epochs_run"], "seconds": time.perf_counter() - trained,
                        "median_epoch_seconds": statistics.median(result["train_seconds_per_epoch"])}
    report = {"device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
              "torch": torch.__version__, "interactions": data.name, "users": data.n_users, "items": data.n_items,
              "training_pairs": int(data.train.nnz), "epochs": rows, "fitmm_ml100k": fitmm_ml100k,
              "wall_seconds": time.perf_counter() - started}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    table = markdown(report)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table)


def markdown(report: dict) -> str:
    lines = [f"## Training on {report['device']} (PyTorch {report['torch']})", "",
             f"Clothing shapes ({report['interactions']}: {report['users']:,} users × {report['items']:,} items, "
             f"{report['training_pairs']:,} training pairs, random 4096-d image and 384-d text features for timing "
             "only); epoch = median batch × batches per epoch.", "",
             "| model | fp32 epoch (s) | bf16 epoch (s) | fp32 peak memory (MB) | bf16 peak memory (MB) |",
             "|---|---|---|---|---|"]
    by_model: dict[str, dict] = {}
    for row in report["epochs"]:
        by_model.setdefault(row["model"], {})[row["precision"]] = row
    for model, rows in by_model.items():
        cells = []
        for key, form in (("epoch_seconds", "{:.2f}"), ("peak_memory_mb", "{:.0f}")):
            cells += [form.format(rows[p][key]) if p in rows and key in rows[p] else "–" for p in ("fp32", "bf16")]
        lines.append(f"| {model} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    fitmm_run = report["fitmm_ml100k"]
    lines += ["", f"FITMM (authors preset, fp32) on ml100k to early stopping: test recall@20 "
                  f"{fitmm_run['test_recall@20']:.4f}, best epoch {fitmm_run['best_epoch']} of {fitmm_run['epochs_run']}, "
                  f"{fitmm_run['median_epoch_seconds']:.2f} s per epoch, {fitmm_run['seconds']:.0f} s in all. "
                  f"Whole benchmark: {report['wall_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
