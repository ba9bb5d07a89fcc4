"""Settings: shared training defaults + a model's YAML defaults + a user file + ``key=value`` overrides.

Later sources override earlier ones; a key that no default defines is an error, so a typo never
silently does nothing. Every value actually used is recorded in ``result.json``.
"""

from __future__ import annotations

import inspect
import re
from importlib import resources
from pathlib import Path

import yaml

from fitmm.errors import InputError
from fitmm.models import get_model_class

TRAINING_KEYS = (
    "preset", "seed", "epochs", "batch_size", "learning_rate", "lr_decay", "patience", "valid_metric",
    "eval_batch_size", "exclude_valid", "checkpoint_every", "device",
)


class _SettingsLoader(yaml.SafeLoader):
    """YAML with scientific notation as floats: PyYAML (YAML 1.1) reads ``1e-4`` as a string."""


_SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_settings_yaml(text: str):
    """Parse settings YAML (a file's content or a ``--set`` value)."""
    return yaml.load(text, Loader=_SettingsLoader)


def _configs():
    return resources.files("fitmm.models").joinpath("configs")


def _read_packaged_yaml(name: str) -> dict:
    return load_settings_yaml(_configs().joinpath(f"{name}.yaml").read_text()) or {}


def presets(model: str) -> list[str]:
    """The named presets of ``model`` (files ``configs/<model>.<preset>.yaml``)."""
    prefix = f"{model}."
    return sorted(entry.name[len(prefix):-len(".yaml")] for entry in _configs().iterdir()
                  if entry.name.startswith(prefix) and entry.name.endswith(".yaml"))


def default_config(model: str) -> dict:
    """The shared training defaults overlaid with the model's own defaults."""
    get_model_class(model)  # unknown model → clear error
    config = _read_packaged_yaml("training")
    config.update(_read_packaged_yaml(model))
    return config


def parse_overrides(assignments: list[str]) -> dict:
    """``["lr=0.01", "n_layers=3"]`` → dict; values are parsed as YAML scalars or lists."""
    overrides = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not key.strip():
            raise InputError(f"--set '{assignment}': expected key=value")
        try:
            overrides[key.strip()] = load_settings_yaml(value)
        except yaml.YAMLError:
            raise InputError(f"--set '{assignment}': the value is not valid YAML") from None
    return overrides


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        content = load_settings_yaml(path.read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read the configuration file ({error.strerror})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}{where}: not valid YAML") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise InputError(f"{path}: expected a mapping of setting names to values")
    return content


def resolve_config(model: str, config_file: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Every setting for one run of ``model``, with unknown keys rejected.

    Order of precedence, lowest first: shared training defaults, the model's defaults, the preset
    (named by ``preset`` in the file or the overrides), the configuration file, the overrides.
    """
    config = default_config(model)
    from_file = read_config_file(config_file) if config_file else {}
    overrides = overrides or {}
    preset = overrides.get("preset", from_file.get("preset"))
    if preset is not None:
        if preset not in presets(model):
            known = ", ".join(presets(model)) or "none"
            raise InputError(f"unknown preset '{preset}' for model '{model}'; available: {known}")
        config.update(_read_packaged_yaml(f"{model}.{preset}"))
    for source, values in ((str(config_file), from_file), ("--set", overrides)):
        unknown = sorted(set(values) - set(config))
        if unknown:
            raise InputError(
                f"{source}: unknown setting(s) {', '.join(unknown)} for model '{model}'; "
                f"known: {', '.join(sorted(config))}"
            )
        config.update(values)
    return config


def model_hyperparameters(model: str, config: dict) -> dict:
    """The part of ``config`` that the model's constructor takes."""
    parameters = inspect.signature(get_model_class(model).__init__).parameters
    return {key: config[key] for key in parameters if key not in ("self", "dataset")}
