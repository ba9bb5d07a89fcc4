"""Models: one file each, registered by name. Importing this package fills the registry."""

from fitmm.models import bm3, fitmm, freedom, lattice, lgmrec, lightgcn, mf, mgcn, popularity, smore, vbpr  # noqa: F401  (registration side effect)
from fitmm.models.base import Recommender
from fitmm.models.registry import MODELS, get_model_class

__all__ = ["MODELS", "Recommender", "get_model_class"]
