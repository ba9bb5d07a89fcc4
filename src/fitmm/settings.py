"""Declared settings: every setting has a type, a default, an allowed range and a one-line description.

A group of settings is a frozen dataclass whose fields are made with :func:`setting`; the models'
hyperparameters (``Model.Settings``) and the shared training settings
(``fitmm.training.settings.TrainingSettings``) are such groups. The declaration is the single
source of truth: YAML presets, ``--config`` files and ``--set`` values are checked against it by
:func:`validate` before any work starts, and ``fitmm models NAME`` prints it with :func:`describe`.

Supported types: ``int``, ``float``, ``bool``, ``str``, ``str | None`` and ``list[str]``. Values are
checked strictly: a YAML ``1.0`` is not an ``int``, ``true`` is not a number, a float must be
finite; an ``int`` is accepted where a ``float`` is declared.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass

from fitmm.errors import InputError

_METADATA_KEY = "fitmm_setting"


@dataclass(frozen=True)
class Rule:
    """What a setting allows besides its type."""

    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple | None = None  # allowed values (for list[str]: allowed elements)
    allowed_text: str | None = None  # a shorter way to say what the choices are

    def allowed(self) -> str:
        """What the setting allows, as a short phrase (``"≥ 1"``, ``"one of bce, bpr"``)."""
        if self.allowed_text:
            return self.allowed_text
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '≥'} {_number(self.minimum)}")
        if self.maximum is not None:
            parts.append(f"≤ {_number(self.maximum)}")
        return ", ".join(parts) or "any"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def setting(default, description: str, *, minimum: float | None = None, maximum: float | None = None,
            exclusive_minimum: bool = False, choices: Sequence | None = None, allowed_text: str | None = None):
    """A dataclass field declaring one setting (its type comes from the field's annotation)."""
    rule = Rule(description, minimum, maximum, exclusive_minimum,
                None if choices is None else tuple(choices), allowed_text)
    if isinstance(default, list):
        frozen = tuple(default)
        return dataclasses.field(default_factory=lambda: list(frozen), metadata={_METADATA_KEY: rule})
    return dataclasses.field(default=default, metadata={_METADATA_KEY: rule})


@dataclass(frozen=True)
class Declared:
    """One declared setting: its name, type, default and rule."""

    name: str
    type: object
    default: object
    rule: Rule

    def allowed(self) -> str:
        """What the setting allows, including its type's own limits."""
        return "true or false" if self.type is bool else self.rule.allowed()

    @property
    def type_name(self) -> str:
        return {int: "int", float: "float", bool: "bool", str: "str", str | None: "str or null",
                list[str]: "list of str"}[self.type]


def declared(group: type) -> list[Declared]:
    """The settings of a settings dataclass, in declaration order."""
    hints = typing.get_type_hints(group)
    out = []
    for field in dataclasses.fields(group):
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        out.append(Declared(field.name, hints[field.name], default, field.metadata[_METADATA_KEY]))
    return out


_WRONG_TYPE = object()


def _typed(entry: Declared, value):
    """``value`` converted to the declared type, or ``_WRONG_TYPE`` when it does not have it."""
    kind = entry.type
    if kind is bool:
        return value if isinstance(value, bool) else _WRONG_TYPE
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG_TYPE
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return _WRONG_TYPE
    if kind is str:
        return value if isinstance(value, str) else _WRONG_TYPE
    if kind == str | None:
        return value if value is None or isinstance(value, str) else _WRONG_TYPE
    if kind == list[str]:
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return list(value)
        return _WRONG_TYPE
    raise TypeError(f"setting {entry.name}: unsupported declared type {kind}")


def check_value(entry: Declared, value):
    """The value to use for ``entry``, or InputError naming the key, the value and what is allowed."""
    typed = _typed(entry, value)
    rule = entry.rule

    def refuse(problem: str) -> InputError:
        return InputError(f"setting {entry.name}={value!r}: {problem}")

    if typed is _WRONG_TYPE:
        allowed = rule.allowed()
        expected = {"float": "a finite number", "int": "an integer", "bool": "true or false",
                    "str": "a string", "str or null": "a string or null", "list of str": "a list of strings"}
        raise refuse(f"expected {expected[entry.type_name]}" + ("" if allowed == "any" else f" ({allowed})"))
    if rule.choices is not None:
        elements = typed if isinstance(typed, list) else [typed]
        bad = [element for element in elements if element not in rule.choices and element is not None]
        if bad:
            raise refuse(f"{bad[0]!r} is not allowed; {rule.allowed()}")
    if isinstance(typed, (int, float)) and not isinstance(typed, bool):
        below = rule.minimum is not None and (typed <= rule.minimum if rule.exclusive_minimum
                                              else typed < rule.minimum)
        above = rule.maximum is not None and typed > rule.maximum
        if below or above:
            raise refuse(f"out of range; allowed {rule.allowed()}")
    return typed


def validate(group: type, values: dict, *, source: str):
    """An instance of the settings dataclass ``group`` from ``values`` (missing keys take defaults).

    Unknown keys and bad values raise InputError naming ``source``, the key, the value and what is
    allowed.
    """
    entries = {entry.name: entry for entry in declared(group)}
    unknown = sorted(set(values) - set(entries))
    if unknown:
        raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(entries)}")
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = check_value(entries[name], value)
        except InputError as error:
            raise InputError(f"{source}: {error}") from None
    return group(**checked)


def as_dict(settings) -> dict:
    """A settings instance as a plain dict (lists copied), in declaration order."""
    return {field.name: (list(value) if isinstance(value := getattr(settings, field.name), list) else value)
            for field in dataclasses.fields(settings)}


def describe(group: type, defaults: dict | None = None) -> list[tuple[str, str, str, str, str]]:
    """Rows (name, type, default, allowed, description) of a settings group; ``defaults`` overrides
    the declared defaults shown (e.g. a model's own training defaults)."""
    rows = []
    for entry in declared(group):
        default = (defaults or {}).get(entry.name, entry.default)
        if default is None:
            shown = "null"
        elif isinstance(default, list):
            shown = "[" + ", ".join(default) + "]"
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
        rows.append((entry.name, entry.type_name, shown, entry.allowed(), entry.rule.description))
    return rows
