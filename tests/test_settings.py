"""Settings declared once: types, defaults, ranges, presets, sources, and one-line refusals."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from fitmm.errors import InputError
from fitmm.models import MODELS
from fitmm.settings import declared
from fitmm.training.settings import (
    TRAINING_KEYS,
    TrainingSettings,
    parse_overrides,
    presets,
    resolve_settings,
    settings_table,
)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_declares_its_settings_with_a_rule_and_takes_them_as_one_object(name):
    model = MODELS[name]
    assert list(inspect.signature(model.__init__).parameters) == ["self", "dataset", "settings"]
    entries = declared(model.Settings)
    assert all(entry.rule.description for entry in entries)
    assert not {entry.name for entry in entries} & set(TRAINING_KEYS)  # one meaning per key
    resolved = resolve_settings(name)
    assert resolved.hyperparameters == model.Settings()
    flat = resolved.as_dict()
    assert set(flat) == set(TRAINING_KEYS) | {entry.name for entry in entries}
    for preset in presets(name):
        resolve_settings(name, overrides={"preset": preset})  # every packaged preset is valid


def test_sources_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("n_layers: 3\nlearning_rate: 0.01\n")
    flat = resolve_settings("lightgcn", path, parse_overrides(["learning_rate=0.005", "seed=7"])).as_dict()
    assert (flat["n_layers"], flat["learning_rate"], flat["seed"]) == (3, 0.005, 7)


def test_model_training_defaults_and_presets():
    fitmm = resolve_settings("fitmm")
    assert (fitmm.training.learning_rate, fitmm.training.epochs) == (0.0001, 300)
    paper = resolve_settings("fitmm", overrides={"preset": "paper"}).hyperparameters
    assert (paper.ib, paper.consistency, paper.uniformity) == ("allocation", "cross_modal", False)
    assert resolve_settings("smore", overrides={"preset": "baby"}).hyperparameters.n_ui_layers == 4


@pytest.mark.parametrize(("overrides", "message"), [
    ({"n_layer": 3}, r"unknown setting\(s\) n_layer\b"),
    ({"learning_rate": "abc"}, r"learning_rate='abc': expected a finite number \(> 0\)"),
    ({"learning_rate": 0}, r"learning_rate=0: out of range; allowed > 0"),
    ({"batch_size": 0}, r"batch_size=0: out of range; allowed ≥ 1"),
    ({"batch_size": 2.0}, r"batch_size=2.0: expected an integer"),
    ({"n_layers": -1}, r"n_layers=-1: out of range; allowed ≥ 0"),
    ({"exclude_valid": 1}, r"exclude_valid=1: expected true or false"),
    ({"device": "gpu"}, r"device='gpu': 'gpu' is not allowed; one of cpu, cuda"),
    ({"valid_metric": "recall@7"}, r"valid_metric='recall@7': 'recall@7' is not allowed; METRIC@K"),
    ({"epochs": 0}, r"epochs=0: out of range; allowed ≥ 1"),
    ({"learning_rate": float("nan")}, r"expected a finite number"),
    ({"preset": "nope"}, r"model 'lightgcn' has no such preset; available: none"),
])
def test_bad_values_are_refused_with_the_key_the_value_and_what_is_allowed(overrides, message):
    with pytest.raises(InputError, match=message) as error:
        resolve_settings("lightgcn", overrides=overrides)
    assert "\n" not in str(error.value)


def test_list_settings_check_their_elements():
    assert resolve_settings("fitmm", overrides={"content_modalities": []}).hyperparameters.content_modalities == []
    with pytest.raises(InputError, match="'audio' is not allowed; one of image, text"):
        resolve_settings("fitmm", overrides={"content_modalities": ["text", "audio"]})


def test_unknown_model_is_rejected():
    with pytest.raises(InputError, match="unknown model 'nope'"):
        resolve_settings("nope")


@pytest.mark.parametrize("assignment", ["novalue", "=3", "x=[1,"])
def test_malformed_override(assignment):
    with pytest.raises(InputError, match="--set"):
        parse_overrides([assignment])


def test_bad_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: [1,\n")
    with pytest.raises(InputError, match="not valid YAML"):
        resolve_settings("lightgcn", path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="expected a mapping"):
        resolve_settings("lightgcn", path)
    path.write_bytes(b"\xff\xfe n_layers: 2")
    with pytest.raises(InputError, match="not valid YAML"):
        resolve_settings("lightgcn", path)


def test_scientific_notation_is_a_number(tmp_path):
    assert parse_overrides(["reg_weight=1e-4", "lr=2.5E-3", "name=1e"]) == {"reg_weight": 1e-4, "lr": 2.5e-3, "name": "1e"}
    path = tmp_path / "c.yaml"
    path.write_text("reg_weight: 1e-5\n")
    assert resolve_settings("lightgcn", path).hyperparameters.reg_weight == 1e-5


def test_settings_table_lists_model_and_training_settings_with_model_defaults():
    rows = {row[0]: row for row in settings_table("fitmm")}
    assert rows["n_bands"][1:4] == ("int", "3", "≥ 1")
    assert rows["learning_rate"][2] == "0.0001"  # FITMM's own training default
    assert rows["preset"][3] == "one of authors, paper"
    assert [field.name for field in dataclasses.fields(TrainingSettings)] == list(TRAINING_KEYS)
