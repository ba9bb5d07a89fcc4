"""The model registry: model name → class, filled by the ``@register`` decorator."""

from __future__ import annotations

from fitmm.errors import InputError
from fitmm.models.base import Recommender

MODELS: dict[str, type[Recommender]] = {}


def register(name: str):
    """Class decorator adding a model to the registry under ``name``."""

    def add(cls: type[Recommender]) -> type[Recommender]:
        if name in MODELS:
            raise ValueError(f"model name '{name}' registered twice")
        MODELS[name] = cls
        cls.registry_name = name
        return cls

    return add


def get_model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model '{name}'; available: {', '.join(sorted(MODELS))}") from None
