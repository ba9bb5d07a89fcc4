"""fitmm: FITMM and strong multimodal recommendation baselines — data, training, evaluation, serving.

The Python API::

    import fitmm
    data = fitmm.load_dataset("ml100k")
    result = fitmm.train("lightgcn", data, "runs/lgcn")
    run = fitmm.load_run("runs/lgcn")
    run.recommend(["196"], k=10)

The names are imported on first use, so that importing a part of the package (e.g. the HTTP
server, which needs no model code) does not import the rest.
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "Dataset": "fitmm.data",
    "load_dataset": "fitmm.data",
    "load_new_items": "fitmm.data",
    "Recommendation": "fitmm.training.runs",
    "TrainedRun": "fitmm.training.runs",
    "load_run": "fitmm.training.runs",
    "train": "fitmm.training.runs",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'fitmm' has no attribute {name!r}")
