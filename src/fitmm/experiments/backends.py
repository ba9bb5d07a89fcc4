"""Trials of tunes and suites: one runner (:func:`run_pending`) on local processes (the default) or a
Ray cluster.

Every backend runs the same function, :func:`run_trial`, with one thread of PyTorch per trial, so
a trial's metrics do not depend on the backend (training is deterministic per seed on CPU).
Trials write their run directories themselves; with Ray on several machines the tune directory
must therefore be on storage that every node sees, and fitmm must be installed on every node.
A trial whose directory holds a ``result.json`` is finished and never run again; an interrupted
one resumes from its ``last.pt``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from fitmm.errors import InputError, MissingExtraError

PARENT_CHECK_SECONDS = 0.5
T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("fitmm.experiments")


@dataclass(frozen=True)
class TrialRequest:
    """Everything a worker needs to train one trial; plain values, so it pickles to any worker."""

    model: str
    dataset: str  # built-in dataset name or absolute folder path
    directory: str  # absolute path of the trial's run directory
    seed: int
    settings: dict  # the trial's setting overrides (searched, fixed and the epoch limit)
    device: str  # where it trains (from the resolved settings), so a backend can reserve a GPU


TrialOutcome = tuple[TrialRequest, str | None]  # the request and its error line (None: it finished)


@contextmanager
def single_threaded():
    """Run the body with one PyTorch thread, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_trial(request: TrialRequest) -> str | None:
    """Train one trial into its directory, resuming it if an earlier attempt was interrupted.

    Returns None when the trial finished, otherwise its error as one line, so one diverging
    configuration does not stop the others.
    """
    from fitmm.training.runs import train

    try:
        with single_threaded():
            train(request.model, request.dataset, request.directory, seed=request.seed,
                  overrides=dict(request.settings), resume=True, progress=False)
    except InputError as error:  # bad input or a refused directory: already one clear line
        return str(error)
    except Exception as error:  # reported in the summary; the other trials go on
        return f"{type(error).__name__}: {error}"
    return None


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` made an existing folder (absolute) for a tune's or suite's files, or one line why not."""
    folder = Path(path).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{option} {path}: cannot be a folder ({error.strerror})") from None
    return folder


def is_finished(request: TrialRequest) -> bool:
    return Path(request.directory, "result.json").exists()


def run_pending(requests: list[TrialRequest], backend: TrialBackend, *, progress: bool, desc: str) -> dict[str, str]:
    """Run the unfinished trials of ``requests`` (in their order) on ``backend`` under one progress bar;
    returns the error line of each trial that failed, by directory."""
    pending = [request for request in requests if not is_finished(request)]
    errors: dict[str, str] = {}
    with tqdm(total=len(requests), initial=len(requests) - len(pending), unit="trial", desc=desc,
              disable=not progress, dynamic_ncols=True) as bar:
        if pending:
            for request, error in backend.run(pending):
                if error is not None:
                    errors[request.directory] = error
                    log.warning("trial %s failed: %s", request.directory, error)
                bar.update()
    return errors


class TrialBackend(Protocol):
    """Runs trials and yields each outcome as soon as its trial ends."""

    description: str

    def run(self, requests: list[TrialRequest]) -> Iterator[TrialOutcome]: ...


def _exit_with_parent(parent_pid: int) -> None:
    """Trial-process initializer: one PyTorch thread, and exit as soon as the tune process is gone.

    A tune killed with SIGKILL cannot stop its workers; without this they would go on writing
    into trial directories that a restarted tune is resuming.
    """
    torch.set_num_threads(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="fitmm-parent-watch", daemon=True).start()


def in_own_process(function: Callable[[T], R], argument: T) -> R:
    """``function(argument)`` in a new process (started with 'spawn') that ends with it.

    A trial in a process of its own inherits nothing from the trials before it: neither their
    caches (oneDNN keeps a compiled kernel for every bf16 matrix shape it has met) nor
    their peak RSS.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as process:
        return process.submit(function, argument).result()


class LocalBackend:
    """Trials on ``workers`` processes of this machine at a time, each in a new process (started with
    'spawn'); all in this process if ``workers`` is 1."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.description = ("this process" if workers == 1
                            else f"{workers} local processes at a time, a new one per trial")

    def run(self, requests: list[TrialRequest]) -> Iterator[TrialOutcome]:
        if self.workers == 1:
            for request in requests:
                yield request, run_trial(request)
            return
        threads = ThreadPoolExecutor(max_workers=min(self.workers, len(requests)))
        try:
            pending = {threads.submit(in_own_process, run_trial, request): request for request in requests}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        finally:
            threads.shutdown(wait=True, cancel_futures=True)


class RayBackend:
    """Trials as Ray tasks (1 CPU each, plus 1 GPU when the trial trains on CUDA).

    ``address`` is what ``ray.init`` takes: ``"auto"`` for the cluster started on this machine
    with ``ray start``, or ``HOST:PORT`` of a head node. If this process is already connected to
    Ray (``ray.init`` was called), that connection is used and left open.
    """

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise MissingExtraError(
                "the Ray backend (--ray-address) needs the optional extra: pip install 'fitmm[ray]'"
            ) from None
        self.ray = ray
        self.address = address
        self.description = f"Ray tasks on the cluster at {address}"

    def run(self, requests: list[TrialRequest]) -> Iterator[TrialOutcome]:
        ray = self.ray
        connected_here = not ray.is_initialized()
        if connected_here:
            try:
                ray.init(address=self.address)
            except ConnectionError as error:
                raise InputError(f"--ray-address {self.address}: {error}") from None
        try:
            remote_trial = ray.remote(run_trial)
            pending = {
                remote_trial.options(num_cpus=1, num_gpus=1 if request.device == "cuda" else 0)
                .remote(request): request
                for request in requests
            }
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                yield pending.pop(done[0]), ray.get(done[0])
        finally:
            if connected_here:
                ray.shutdown()
