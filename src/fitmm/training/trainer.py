"""The training loop: Adam, per-epoch validation, early stopping, checkpoints, ``result.json``.

A run directory holds:

- ``result.json``: the PROTOCOL result (metrics at the best epoch, timings, peak RSS, settings);
- ``best.pt``: the model's weights at the best validation epoch;
- ``last.pt``: everything needed to resume (model, optimiser, scheduler, random states, history);
- ``per_user_{valid,test}.npz``: per-user metrics at the best epoch (for paired significance tests);
- ``train.log``: the log of the run.

Files are written atomically (to a temporary name, then renamed), so a crash never leaves a
half-written checkpoint or result.
"""

from __future__ import annotations

import logging
import math
import os
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fitmm.data.dataset import Dataset
from fitmm.evaluation import EvaluationResult, evaluate
from fitmm.files import atomic_write, write_json
from fitmm.models.base import Recommender
from fitmm.training.sampler import NegativeSampler

log = logging.getLogger("fitmm.training")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if os.uname().sysname == "Darwin" else 1.0)


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
    """Trains one model on one dataset with one configuration, into ``out_dir``."""

    def __init__(self, model: Recommender, dataset: Dataset, config: dict, out_dir: Path,
                 progress: bool = True) -> None:
        self.model = model
        self.dataset = dataset
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.device = torch.device(config["device"])
        self.generator = torch.Generator().manual_seed(config["seed"])
        self.history = History()
        self.start_epoch = 0
        self.model.to(self.device)
        if model.trainable:
            self.sampler = NegativeSampler(dataset.train, self.generator)
            # fused: one kernel for every parameter (several times faster than the per-tensor loop
            # on CPU, where large fine-tuned feature tables make the step a real cost)
            self.optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"], fused=True)
            decay = config["lr_decay"]
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda epoch: decay ** (epoch / 50)
            )

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, split: str) -> EvaluationResult:
        exclude = [self.dataset.train]
        if split == "test" and self.config["exclude_valid"]:
            exclude.append(self.dataset.valid)
        self.model.eval()
        with torch.no_grad():
            score = self.model.scorer()
            return evaluate(
                lambda users: score(users.to(self.device)),
                self.dataset.evaluation_users(split),
                self.dataset.split_matrix(split),
                exclude,
                batch_size=self.config["eval_batch_size"],
            )

    # ----------------------------------------------------------------- checkpoints
    def _save_resumable(self, epoch: int) -> None:
        state = {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "history": asdict(self.history),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        atomic_write(self.out_dir / "last.pt", lambda handle: torch.save(state, handle))

    def resume(self) -> bool:
        """Restore the state of ``last.pt`` if it exists; returns whether it did."""
        path = self.out_dir / "last.pt"
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history = History(**state["history"])
        self.start_epoch = state["epoch"] + 1
        log.info("resumed from %s after epoch %d", path, state["epoch"])
        return True

    def _save_best(self) -> None:
        state = self.model.state_dict()
        atomic_write(self.out_dir / "best.pt", lambda handle: torch.save(state, handle))

    # ----------------------------------------------------------------- training
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.on_epoch_start(epoch)
        self.model.train()
        totals: dict[str, float] = {}
        n_batches = 0
        for users, positives, negatives in self.sampler.batches(
            self.config["batch_size"], self.model.uses_negatives
        ):
            users, positives = users.to(self.device), positives.to(self.device)
            if negatives is not None:
                negatives = negatives.to(self.device)
            parts = self.model.loss(users, positives, negatives)
            if not torch.isfinite(parts["loss"]):
                raise FloatingPointError(
                    f"the training loss became {parts['loss'].item()} at epoch {epoch}; "
                    "lower learning_rate or check the input features"
                )
            self.optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            self.optimizer.step()
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
            n_batches += 1
        self.scheduler.step()
        return {name: total / n_batches for name, total in totals.items()}

    def _stopping(self) -> bool:
        return self.history.epochs_without_improvement > self.config["patience"]

    def fit(self) -> None:
        """Train until early stopping or the epoch limit; keeps the best weights in ``best.pt``."""
        if not self.model.trainable:
            self.history.best_epoch = 0
            self._save_best()
            return
        metric = self.config["valid_metric"]
        history = self.history
        epochs = range(self.start_epoch, self.config["epochs"])
        bar = tqdm(epochs, desc=f"{self.model.registry_name} on {self.dataset.name}",
                   unit="epoch", disable=not self.progress, dynamic_ncols=True)
        for epoch in bar:
            if self._stopping():
                break
            started = time.perf_counter()
            losses = self._train_epoch(epoch)
            trained = time.perf_counter()
            score = self.evaluate("valid").means()[metric]
            history.train_seconds.append(trained - started)
            history.eval_seconds.append(time.perf_counter() - trained)
            history.losses.append(losses)
            history.valid_scores.append(score)
            history.diagnostics.append(self.model.diagnostics())
            if score > history.best_score:
                history.best_score, history.best_epoch = score, epoch
                history.epochs_without_improvement = 0
                self._save_best()
            else:
                history.epochs_without_improvement += 1
            every = self.config["checkpoint_every"]
            if every and (epoch + 1) % every == 0:
                self._save_resumable(epoch)
            log.info("epoch %d: %s, valid %s %.5f (best %.5f at epoch %d)", epoch,
                     ", ".join(f"{k} {v:.5f}" for k, v in losses.items()), metric, score,
                     history.best_score, history.best_epoch)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", **{metric: f"{score:.4f}"},
                            best=f"{history.best_score:.4f}@{history.best_epoch}")
        bar.close()

    def load_best(self) -> None:
        state = torch.load(self.out_dir / "best.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state)

    def result(self) -> dict:
        """Evaluate the best weights on validation and test; write per-user metrics and result.json."""
        self.load_best()
        metrics = {}
        for split in ("valid", "test"):
            evaluation = self.evaluate(split)
            metrics[split] = evaluation.means()
            np.savez_compressed(self.out_dir / f"per_user_{split}.npz",
                                users=evaluation.users, **evaluation.per_user)
        history = self.history
        result = {
            "model": self.model.registry_name,
            "dataset": self.dataset.name,
            "dataset_source": self.dataset.source,
            "seed": self.config["seed"],
            "best_epoch": history.best_epoch,
            "epochs_run": len(history.train_seconds),
            "valid": metrics["valid"],
            "test": metrics["test"],
            "train_seconds_per_epoch": history.train_seconds,
            "eval_seconds_per_epoch": history.eval_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "history": {"loss": history.losses, "valid_" + self.config["valid_metric"]: history.valid_scores,
                        "diagnostics": history.diagnostics},
            "diagnostics": self.model.diagnostics(),
            "config": self.config,
        }
        write_json(self.out_dir / "result.json", result)
        return result
