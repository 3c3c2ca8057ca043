"""Settings fields that carry their flag's help text and their bounds, and the one check that a
value from a config file or from a command-line flag goes through before it reaches a run."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any


def option(default: Any, help: str, **bounds: Any) -> Any:
    """A dataclass field with the help text its flag shows and its bounds, any of:
    ``minimum`` / ``exclusive_minimum`` (numbers) and ``choices`` (a tuple of allowed values)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **bounds})
    return field(default=default, metadata={"help": help, **bounds})


class SettingError(ValueError):
    """A value of the wrong type or out of its field's bounds; the message says which bound."""


def check(item: dataclasses.Field, hint: Any, value: Any) -> Any:
    """``value`` converted to the field's type and checked against its bounds.

    A flag's value arrives as text (``"0.5"``), a config file's typed (``0.5``); both end as
    the same value and meet the same bounds. SettingError says what is wrong with it.
    """
    value = _convert(hint, value)
    if value is None:
        return value
    bounds = item.metadata
    if "choices" in bounds and value not in bounds["choices"]:
        raise SettingError(f"must be one of {', '.join(map(str, bounds['choices']))}")
    if "minimum" in bounds and value < bounds["minimum"]:
        raise SettingError(f"must be at least {bounds['minimum']}")
    if "exclusive_minimum" in bounds and value <= bounds["exclusive_minimum"]:
        raise SettingError(f"must be more than {bounds['exclusive_minimum']}")
    return value


def _convert(hint: Any, value: Any) -> Any:
    arguments = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        if value is None and type(None) in arguments:
            return None
        (hint,) = [argument for argument in arguments if argument is not type(None)]
        arguments = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise SettingError("expected a list")
        return [_convert(arguments[0], element) for element in value]
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise SettingError("expected a table")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingError("expected true or false")
        return value
    if hint is int:
        if isinstance(value, str):
            value = _parse(int, value, "an integer")
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(f"expected an integer, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            value = _parse(float, value, "a number")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SettingError(f"expected a finite number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingError(f"expected a string, not {value!r}")
        return value
    return value


def _parse(kind: type, text: str, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise SettingError(f"expected {what}, not {text!r}") from None
