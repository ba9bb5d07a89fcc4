"""Settings: defaults per model, overrides, and rejection of unknown keys."""

from __future__ import annotations

import inspect

import pytest

from fitmm.errors import InputError
from fitmm.models import MODELS
from fitmm.training.config import TRAINING_KEYS, parse_overrides, resolve_config


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_defaults_are_exactly_its_constructor_arguments(name):
    config = resolve_config(name)
    parameters = set(inspect.signature(MODELS[name].__init__).parameters) - {"self", "dataset"}
    assert set(config) - set(TRAINING_KEYS) == parameters
    assert set(TRAINING_KEYS) <= set(config)


def test_overrides_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("n_layers: 3\nlearning_rate: 0.01\n")
    config = resolve_config("lightgcn", path, parse_overrides(["learning_rate=0.005", "seed=7"]))
    assert (config["n_layers"], config["learning_rate"], config["seed"]) == (3, 0.005, 7)


def test_unknown_setting_is_rejected():
    with pytest.raises(InputError, match="unknown setting.*n_layer\\b"):
        resolve_config("lightgcn", overrides={"n_layer": 3})


def test_unknown_model_is_rejected():
    with pytest.raises(InputError, match="unknown model 'nope'"):
        resolve_config("nope")


@pytest.mark.parametrize("assignment", ["novalue", "=3", "x=[1,"])
def test_malformed_override(assignment):
    with pytest.raises(InputError, match="--set"):
        parse_overrides([assignment])


def test_bad_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: [1,\n")
    with pytest.raises(InputError, match="not valid YAML"):
        resolve_config("lightgcn", path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="expected a mapping"):
        resolve_config("lightgcn", path)


def test_scientific_notation_is_a_number(tmp_path):
    assert parse_overrides(["reg_weight=1e-4", "lr=2.5E-3", "name=1e"]) == {"reg_weight": 1e-4, "lr": 2.5e-3, "name": "1e"}
    path = tmp_path / "c.yaml"
    path.write_text("reg_weight: 1e-5\n")
    assert resolve_config("lightgcn", path)["reg_weight"] == 1e-5
