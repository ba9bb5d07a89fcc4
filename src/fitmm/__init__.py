"""fitmm: FITMM and strong multimodal recommendation baselines — data, training, evaluation, serving."""

from fitmm.data import Dataset, load_dataset
from fitmm.interfaces.api import TrainedRun, load_run, train

__version__ = "0.1.0"

__all__ = ["Dataset", "TrainedRun", "__version__", "load_dataset", "load_run", "train"]
