"""User-supplied parameters, checked before any work: typed values from strings, one message each.

Every way in (``-p``/``-a`` on the command line, papermill parameters, :class:`~segattack.study.runner.RunConfig`
in a notebook) goes through :func:`coerce`, so ``targeted=false`` is ``False`` (never the true
string ``"false"``), ``eps=8/255`` is a number, ``inf`` and ``nan`` are refused, and a message
always names the parameter.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Literal

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_FRACTION = re.compile(r"^\s*([-+]?[0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


class ParameterError(ValueError):
    """A parameter with the wrong type or value; the message names it."""


def parse_literal(text: str) -> Any:
    """A command-line value: a Python literal (number, dict, list, quoted string) or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, :func:`parse_literal` of the value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParameterError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), parse_literal(raw)


def _from_text(name: str, text: str, kind: type) -> int | float:
    match = _FRACTION.match(text)
    try:
        if match:
            return float(Fraction(match[1]) / Fraction(match[2]))
        return int(text) if kind is int else float(text)
    except (ValueError, ZeroDivisionError):
        raise ParameterError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _number(name: str, value: Any, kind: type) -> int | float:
    if isinstance(value, str):
        value = _from_text(name, value.strip(), kind)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    if kind is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    return int(value)


def coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (bool, int, float, str, Literal, dict, Optional/unions of these).

    Strings convert strictly: booleans from true/false/1/0/yes/no/on/off in any case, numbers
    from decimal text or a fraction ``a/b``; non-finite numbers are refused."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        text_none = isinstance(value, str) and value.strip().lower() == "none"
        if (value is None or text_none) and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(name, value, option)
            except ParameterError as exc:
                errors.append(str(exc))
        raise ParameterError(errors[0] if len(errors) == 1 else f"{name}: got {value!r}; " + "; or ".join(errors))
    if origin is Literal:
        if value in args:
            return value
        raise ParameterError(f"{name} must be one of {', '.join(map(repr, args))}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
            return value.strip().lower() in TRUE
        raise ParameterError(f"{name} must be true or false, got {value!r}")
    if hint in (int, float):
        return _number(name, value, hint)
    if hint is str:
        if isinstance(value, int) and not isinstance(value, bool):  # -p window=32: the command line's 32 is text
            return str(value)
        if not isinstance(value, str):
            raise ParameterError(f"{name} must be text, got {value!r}")
        return value
    if origin is list:
        value = parse_literal(value) if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{name} must be a list such as [1, 2], got {value!r}")
        return [coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ParameterError(f"{name} must be a dict such as {{'eps': 0.03}}, got {value!r}")
        return value
    if hint is Any:
        return value
    raise ParameterError(f"{name} cannot be set from here (type {hint})")


# Keywords of an attack that a run sets itself (the batch, the model, the iteration count, progress).
RUN_OWNED = ("model", "images", "labels", "targets", "steps", "progress", "generator")


def attack_keywords(fn: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only hyperparameters of an attack function with their type hints."""
    hints = typing.get_type_hints(fn)
    return {
        name: hints.get(name, Any)
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in RUN_OWNED
    }


def check_attack_params(attack: str, fn: Callable[..., Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` coerced to ``fn``'s signature; unknown keywords and bad values are refused."""
    known = attack_keywords(fn)
    out = {}
    for key, value in params.items():
        if key == "steps":
            raise ParameterError("steps is a run parameter (--steps / -p steps=N), not an attack parameter")
        if key not in known:
            raise ParameterError(f"{attack} has no parameter {key!r}; it takes {', '.join(sorted(known))}")
        out[key] = coerce(key, value, known[key])
    return out
