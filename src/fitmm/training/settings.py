"""The settings of one run: the shared training settings plus the model's own, resolved and checked.

Sources, lowest precedence first: the declared defaults of :class:`TrainingSettings`, the model's
training defaults (``Model.training_defaults``, e.g. FITMM's learning rate), the model's declared
defaults (``Model.Settings``), a named preset (``configs/<model>.<preset>.yaml``), a ``--config``
YAML file, then ``--set key=value`` overrides. Every value from every source is checked against its
declaration before any work starts: an unknown key, a wrong type or a value out of range is one
line naming the source, the key, the value and what is allowed. ``result.json`` records every value
used (:meth:`RunSettings.as_dict`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from fitmm.errors import InputError
from fitmm.evaluation.metrics import CUTOFFS, METRIC_NAMES, METRICS
from fitmm.models import get_model_class
from fitmm.settings import as_dict, declared, describe, setting, validate
from fitmm.training.precision import PRECISIONS


@dataclass(frozen=True)
class TrainingSettings:
    """Training and evaluation settings shared by every model."""

    preset: str | None = setting(None, "a named bundle of model settings, e.g. fitmm's paper preset")
    seed: int = setting(999, "one global seed: model initialisation, negative sampling, dropout",
                        minimum=0, maximum=2**32 - 1)
    epochs: int = setting(1000, "maximum number of training epochs", minimum=1)
    batch_size: int = setting(2048, "training interactions per batch", minimum=1)
    learning_rate: float = setting(0.001, "Adam's learning rate", minimum=0, exclusive_minimum=True)
    lr_decay: float = setting(1.0, "learning rate at epoch e = learning_rate · lr_decay^(e/50)",
                              minimum=0, maximum=1, exclusive_minimum=True)
    patience: int = setting(20, "stop after more than this many evaluations without strict improvement",
                            minimum=0)
    valid_metric: str = setting("recall@20", "early-stopping and selection metric, on the validation split",
                                choices=METRIC_NAMES,
                                allowed_text=f"METRIC@K: {'/'.join(METRICS)} @ {'/'.join(map(str, CUTOFFS))}")
    eval_batch_size: int = setting(4096, "users per evaluation batch", minimum=1)
    exclude_valid: bool = setting(False, "when scoring test, also exclude each user's validation items")
    checkpoint_every: int = setting(1, "write a resumable checkpoint every N epochs (0: only before the "
                                       "first epoch)", minimum=0)
    device: str = setting("cpu", "where to train and score", choices=("cpu", "cuda"))
    precision: str = setting("fp32", "bf16: the training step's dense matrix products in bfloat16 where the "
                                     "hardware has it natively (losses, eigen-decompositions and scoring stay fp32)",
                             choices=PRECISIONS)


TRAINING_KEYS = tuple(entry.name for entry in declared(TrainingSettings))


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


def presets(model: str) -> list[str]:
    """The named presets of ``model`` (files ``configs/<model>.<preset>.yaml``)."""
    prefix = f"{model}."
    return sorted(entry.name[len(prefix):-len(".yaml")] for entry in _configs().iterdir()
                  if entry.name.startswith(prefix) and entry.name.endswith(".yaml"))


def _preset_values(model: str, preset: str) -> dict:
    if preset not in presets(model):
        known = ", ".join(presets(model)) or "none"
        raise InputError(f"setting preset={preset!r}: model '{model}' has no such preset; available: {known}")
    return load_settings_yaml(_configs().joinpath(f"{model}.{preset}.yaml").read_text()) or {}


def parse_overrides(assignments: list[str]) -> dict:
    """``["learning_rate=0.01", "n_layers=3"]`` → dict; values are parsed as YAML scalars or lists."""
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
    """The mapping in a YAML settings file (empty for an empty file)."""
    path = Path(path)
    try:
        content = load_settings_yaml(path.read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read the configuration file ({error.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}{where}: not valid YAML") from None
    if content is None:
        return {}
    if not isinstance(content, dict) or not all(isinstance(key, str) for key in content):
        raise InputError(f"{path}: expected a mapping of setting names to values")
    return content


@dataclass(frozen=True)
class RunSettings:
    """Every setting of one run: the shared training settings and the model's hyperparameters."""

    model: str
    training: TrainingSettings
    hyperparameters: object  # an instance of the model's Settings dataclass

    def as_dict(self) -> dict:
        """All settings as one flat dict (what ``result.json`` records under ``config``)."""
        return {**as_dict(self.training), **as_dict(self.hyperparameters)}


def known_settings(model: str) -> set[str]:
    """Every setting name ``model`` accepts: the training settings and its own."""
    return set(TRAINING_KEYS) | {entry.name for entry in declared(get_model_class(model).Settings)}


def check_known(model: str, keys, source: str) -> None:
    """An InputError naming ``source`` if a key is not a setting of ``model``."""
    unknown = sorted(set(keys) - known_settings(model))
    if unknown:
        raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)} for model '{model}'; "
                         f"known: {', '.join(sorted(known_settings(model)))}")


def _split(model: str, values: dict, source: str) -> tuple[dict, dict]:
    """``values`` divided into training and model settings; unknown keys are an error."""
    check_known(model, values, source)
    model_keys = known_settings(model) - set(TRAINING_KEYS)
    return ({key: value for key, value in values.items() if key in TRAINING_KEYS},
            {key: value for key, value in values.items() if key in model_keys})


def resolve_settings(model: str, config_file: str | Path | None = None, overrides: dict | None = None, *,
                     overrides_source: str = "--set") -> RunSettings:
    """Every setting for one run of ``model``, checked against the declarations (module docstring);
    errors in ``overrides`` name ``overrides_source``."""
    model_class = get_model_class(model)
    from_file = read_config_file(config_file) if config_file else {}
    overrides = dict(overrides or {})
    preset = overrides.get("preset", from_file.get("preset"))
    layers = [("defaults of " + model, dict(model_class.training_defaults))]
    if preset is not None:
        if not isinstance(preset, str):
            raise InputError(f"setting preset={preset!r}: expected a preset name (a string)")
        layers.append((f"preset {model}.{preset}", _preset_values(model, preset)))
    layers += [(str(config_file), from_file), (overrides_source, overrides)]
    training, hyperparameters = {}, {}
    for source, values in layers:
        training_part, model_part = _split(model, values, source)
        validate(TrainingSettings, training_part, source=source)  # each source checked on its own
        validate(model_class.Settings, model_part, source=source)
        training.update(training_part)
        hyperparameters.update(model_part)
    return RunSettings(model, validate(TrainingSettings, training, source=model),
                       validate(model_class.Settings, hyperparameters, source=model))


def settings_table(model: str) -> list[tuple[str, str, str, str, str]]:
    """(name, type, default, allowed, description) of every setting of ``model``: its own, then the
    training settings with the model's training defaults."""
    model_class = get_model_class(model)
    rows = describe(model_class.Settings)
    training_rows = describe(TrainingSettings, model_class.training_defaults)
    return rows + [row if row[0] != "preset" else (*row[:3], "none" if not presets(model)
                                                   else "one of " + ", ".join(presets(model)), row[4])
                   for row in training_rows]
