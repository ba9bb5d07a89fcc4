"""Checkpoint files that cannot run code and know which run they belong to.

Every checkpoint (``best.pt``, ``last.pt``) is a dict of tensors and plain Python values (numbers,
strings, lists, dicts), written with ``torch.save`` and read back with
``torch.load(weights_only=True)``, which refuses anything else: a file that would run code when
unpickled is rejected, never executed. Random-number states, which NumPy and Python keep in their
own types, are converted to tensors and lists (:func:`capture_random_states`).

Each checkpoint carries the identity of its run (model, every setting, the dataset fingerprint,
see :func:`run_identity`); :func:`load_checkpoint` refuses a checkpoint of another run with one
line that says what differs.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from fitmm.data.fingerprint import fingerprint_difference
from fitmm.errors import InputError
from fitmm.files import atomic_write

FORMAT = 1


def run_identity(model: str, settings: dict, fingerprint: dict) -> dict:
    """What makes two runs the same run: the model, every setting and the dataset's fingerprint."""
    return {"model": model, "settings": settings, "dataset": fingerprint}


def identity_difference(expected: dict, found: dict) -> str | None:
    """How the run ``found`` (in a file) differs from the run ``expected`` (here) as a short phrase, or
    None when they are the same run."""
    if expected == found:
        return None
    if not isinstance(found, dict) or not isinstance(found.get("settings"), dict) or \
            not isinstance(found.get("dataset"), dict) or "model" not in found:
        return "its identity is missing or unreadable"
    if expected["model"] != found["model"]:
        return f"model {found['model']} in it, {expected['model']} here"
    changed = [key for key in sorted(set(expected["settings"]) | set(found["settings"]))
               if expected["settings"].get(key) != found["settings"].get(key)]
    if changed:
        shown = ", ".join(f"{key} {found['settings'].get(key)!r} in it, {expected['settings'].get(key)!r} here"
                          for key in changed[:3])
        return f"settings differ: {shown}" + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return "dataset differs: " + (fingerprint_difference(expected["dataset"], found["dataset"]) or "fingerprint")


def save_checkpoint(path: Path, identity: dict, content: dict) -> None:
    """Write ``content`` (tensors and plain values) with the run's identity, atomically."""
    state = {"format": FORMAT, "run": identity, **content}
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, identity: dict) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` for the run ``identity`` (onto the CPU;
    ``load_state_dict`` moves weights to the model's device).

    A missing, truncated, corrupt or code-carrying file, or one of another run, is an InputError
    whose one line names the file and the fault.
    """
    if not path.is_file():
        raise InputError(f"{path}: missing (the run directory is incomplete)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise InputError(f"{path}: refused, it holds something other than tensors and plain values "
                         f"({reason[:120]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as error:
        raise InputError(f"{path}: not a readable checkpoint ({type(error).__name__}); it is truncated or "
                         "corrupt") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("run"), dict):
        raise InputError(f"{path}: not a fitmm checkpoint of this version (no run identity)")
    difference = identity_difference(identity, state["run"])
    if difference is not None:
        raise InputError(f"{path}: belongs to another run ({difference})")
    return state


def capture_random_states(generator: torch.Generator) -> dict:
    """Every random-number state a training run draws from, as tensors and plain values."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    states = {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict, generator: torch.Generator) -> None:
    """Undo :func:`capture_random_states`."""
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
