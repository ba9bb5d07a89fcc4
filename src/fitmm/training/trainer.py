"""The training loop: Adam, per-epoch validation, early stopping, checkpoints, ``result.json``.

A run directory holds:

- ``run.json``: the run's identity (model, every setting, dataset fingerprint), written first;
- ``result.json``: the metrics at the best epoch, timings, peak RSS, settings, history;
- ``best.pt``: the model's weights at the best validation epoch;
- ``last.pt``: everything needed to resume (model, optimiser, scheduler, random states, history),
  written before the first epoch and then every ``checkpoint_every`` epochs;
- ``per_user_{valid,test}.npz``: per-user metrics at the best epoch (for paired significance tests);
- ``train.log``: the log of the run.

Files are written atomically (``fitmm.files``), and every checkpoint carries the run's identity
(``fitmm.training.checkpoints``), so a crash never leaves a half-written file and a checkpoint of
another run is never mistaken for this one's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import random
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fitmm.data.dataset import Dataset
from fitmm.errors import TrainingDivergedError
from fitmm.evaluation import EvaluationResult, evaluate, excluded_splits
from fitmm.files import atomic_write, write_json
from fitmm.models.base import Recommender
from fitmm.training.checkpoints import capture_random_states, load_checkpoint, restore_random_states, save_checkpoint
from fitmm.training.precision import autocast
from fitmm.training.sampler import NegativeSampler
from fitmm.training.settings import TrainingSettings

log = logging.getLogger("fitmm.training")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reset_peak_rss() -> None:
    """Restart the count of :func:`peak_rss_mb` from the current resident set size, where the system
    allows it (Linux 4.0 and later), so that a run trained after others in one process reports its
    own peak; elsewhere the peak stays the process's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident set size in MB: since the last :func:`reset_peak_rss` on Linux, else of the process."""
    with contextlib.suppress(OSError):
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmHWM:\s*(\d+) kB", status, re.MULTILINE).group(1)) / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS reports bytes, others KiB
    return peak / 1024.0 / (1024.0 if os.uname().sysname == "Darwin" else 1.0)


def evaluate_model(model: Recommender, dataset: Dataset, split: str, settings: TrainingSettings) -> EvaluationResult:
    """Full-ranking metrics of ``model`` on ``split`` (valid or test) under the protocol's exclusions."""
    device = torch.device(settings.device)
    model.eval()
    with torch.no_grad():
        score = model.scorer()
        return evaluate(
            lambda users: score(users.to(device)),
            dataset.evaluation_users(split),
            dataset.split_matrix(split),
            [dataset.split_matrix(name) for name in excluded_splits(split, settings.exclude_valid)],
            batch_size=settings.eval_batch_size,
        )


@dataclass
class History:
    """Per-epoch records and the early-stopping state (saved with every resumable checkpoint)."""

    train_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)
    valid_scores: list[float] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -math.inf
    epochs_without_improvement: int = 0


class Trainer:
    """Trains one model on one dataset with one configuration, into ``out_dir``.

    ``identity`` is the run's identity (``fitmm.training.checkpoints.run_identity``); every
    checkpoint written carries it and every checkpoint read must match it.
    """

    def __init__(self, model: Recommender, dataset: Dataset, settings: TrainingSettings, out_dir: Path,
                 identity: dict, progress: bool = True) -> None:
        self.model = model
        self.dataset = dataset
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.identity = identity
        self.progress = progress
        self.device = torch.device(settings.device)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.history = History()
        self.start_epoch = 0
        self.model.to(self.device)
        if model.trainable:
            self.sampler = NegativeSampler(dataset.train, self.generator)
            # fused: one kernel for every parameter (several times faster than the per-tensor loop
            # on CPU, where large fine-tuned feature tables make the step a real cost)
            self.optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, fused=True)
            decay = settings.lr_decay
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda epoch: decay ** (epoch / 50)
            )

    # ----------------------------------------------------------------- checkpoints
    def _save_resumable(self, epoch: int) -> None:
        """``last.pt`` after ``epoch`` (−1: before the first epoch)."""
        save_checkpoint(self.out_dir / "last.pt", self.identity, {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "random": capture_random_states(self.generator),
            "history": asdict(self.history),
        })

    def resume(self) -> bool:
        """Restore the state of ``last.pt`` if it exists; returns whether it did."""
        path = self.out_dir / "last.pt"
        if not path.exists():
            return False
        state = load_checkpoint(path, self.identity)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_random_states(state["random"], self.generator)
        self.history = History(**state["history"])
        self.start_epoch = state["epoch"] + 1
        log.info("resumed from %s after epoch %d", path, state["epoch"])
        return True

    def _save_best(self, epoch: int) -> None:
        save_checkpoint(self.out_dir / "best.pt", self.identity, {"epoch": epoch, "model": self.model.state_dict()})

    # ----------------------------------------------------------------- training
    def step(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None
             ) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch (the loss in the run's precision); returns the loss parts."""
        users, positives = users.to(self.device), positives.to(self.device)
        if negatives is not None:
            negatives = negatives.to(self.device)
        with autocast(self.settings.precision, self.device.type):
            parts = self.model.loss(users, positives, negatives)
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        return parts

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch; the loss parts are summed on the model's device and read once at its end (a
        training step never waits for the device), which is where a non-finite loss is caught."""
        self.model.on_epoch_start(epoch)
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        n_batches = 0
        for users, positives, negatives in self.sampler.batches(self.settings.batch_size, self.model.uses_negatives):
            parts = self.step(users, positives, negatives)
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + value.detach().double()
            n_batches += 1
        means = {name: float(total) / n_batches for name, total in totals.items()}
        if not math.isfinite(means["loss"]):
            self._diverged(epoch, means)
        self.model.on_epoch_end(epoch)
        self.scheduler.step()
        return means

    def _diverged(self, epoch: int, means: dict[str, float]) -> None:
        bad = [name for name, value in means.items() if name != "loss" and not math.isfinite(value)]
        term = f"its '{bad[0]}' term is {means[bad[0]]}" if bad else f"it is {means['loss']}"
        raise TrainingDivergedError(f"training diverged in epoch {epoch}: the loss is not finite ({term}); "
                                    "the last checkpoint (last.pt) is kept; lower learning_rate or check the "
                                    "input features")

    def _stopping(self) -> bool:
        return self.history.epochs_without_improvement > self.settings.patience

    def fit(self) -> None:
        """Train until early stopping or the epoch limit; keeps the best weights in ``best.pt``."""
        if not self.model.trainable:
            self.history.best_epoch = 0
            self._save_best(0)
            return
        if self.start_epoch == 0:
            self._save_resumable(-1)
        metric = self.settings.valid_metric
        history = self.history
        epochs = range(self.start_epoch, self.settings.epochs)
        bar = tqdm(epochs, desc=f"{self.model.registry_name} on {self.dataset.name}",
                   unit="epoch", disable=not self.progress, dynamic_ncols=True)
        for epoch in bar:
            if self._stopping():
                break
            started = time.perf_counter()
            losses = self._train_epoch(epoch)
            trained = time.perf_counter()
            try:
                score = evaluate_model(self.model, self.dataset, "valid", self.settings).means()[metric]
            except FloatingPointError:
                raise TrainingDivergedError(f"training diverged in epoch {epoch}: the model scores NaN; lower "
                                            "learning_rate or check the input features") from None
            history.train_seconds.append(trained - started)
            history.eval_seconds.append(time.perf_counter() - trained)
            history.losses.append(losses)
            history.valid_scores.append(score)
            history.diagnostics.append(self.model.diagnostics())
            if score > history.best_score:
                history.best_score, history.best_epoch = score, epoch
                history.epochs_without_improvement = 0
                self._save_best(epoch)
            else:
                history.epochs_without_improvement += 1
            every = self.settings.checkpoint_every
            if every and (epoch + 1) % every == 0:
                self._save_resumable(epoch)
            log.info("epoch %d: %s, valid %s %.5f (best %.5f at epoch %d)", epoch,
                     ", ".join(f"{k} {v:.5f}" for k, v in losses.items()), metric, score,
                     history.best_score, history.best_epoch)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", **{metric: f"{score:.4f}"},
                            best=f"{history.best_score:.4f}@{history.best_epoch}")
        bar.close()

    def result(self) -> dict:
        """Evaluate the best weights on validation and test; write per-user metrics and result.json."""
        self.model.load_state_dict(load_checkpoint(self.out_dir / "best.pt", self.identity)["model"])
        metrics = {}
        for split in ("valid", "test"):
            evaluation = evaluate_model(self.model, self.dataset, split, self.settings)
            metrics[split] = evaluation.means()
            buffer = io.BytesIO()
            np.savez_compressed(buffer, users=evaluation.users, **evaluation.per_user)
            atomic_write(self.out_dir / f"per_user_{split}.npz", buffer.getvalue())
        history = self.history
        result = {
            "model": self.model.registry_name,
            "dataset": self.dataset.name,
            "dataset_source": self.dataset.source,
            "dataset_fingerprint": self.identity["dataset"],
            "seed": self.settings.seed,
            "best_epoch": history.best_epoch,
            "epochs_run": len(history.train_seconds),
            "valid": metrics["valid"],
            "test": metrics["test"],
            "train_seconds_per_epoch": history.train_seconds,
            "eval_seconds_per_epoch": history.eval_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "history": {"loss": history.losses, "valid_" + self.settings.valid_metric: history.valid_scores,
                        "diagnostics": history.diagnostics},
            "diagnostics": self.model.diagnostics(),
            "config": self.identity["settings"],
        }
        write_json(self.out_dir / "result.json", result)
        return result
