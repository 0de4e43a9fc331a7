"""What a schema field states beyond its type: a range or a set of choices, and the one line that names a refused
value. Torch-free and Hydra-free (the CLI pre-flight imports it)."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from omegaconf import MISSING

from digin_cli.errors import DiginError


def ranged(default: Any = MISSING, minimum: float | None = None, above: bool = False, maximum: float | None = None,
           example: Any = None, choices: tuple = ()):
    """A field whose value must lie in [minimum, maximum] (``minimum`` strict when ``above``) or among ``choices``.

    ``default`` is MISSING for the task schemas: their YAML files hold the values (with the why), the schema only the
    types and ranges, so each value is written once. ``example`` (else the default) is what an error suggests.
    """
    meta = {"minimum": minimum, "above": above, "maximum": maximum, "choices": choices,
            "example": default if example is None else example}
    return field(default=default, metadata=meta)


def expected(kind: type, minimum: float | None = None, above: bool = False, optional: bool = False,
             maximum: float | None = None) -> str:
    """What a number must be, in words: "an integer >= 0", "a positive integer", "a number in (0, 1]"."""
    if maximum is not None:
        low = "(" if above else "["
        words = f"{'an integer' if kind is int else 'a number'} in {low}{minimum:g}, {maximum:g}]"
    else:
        bound = "" if minimum is None else f" {'>' if above else '>='} {minimum:g}"
        words = f"{'an integer' if kind is int else 'a number'}{bound}"
        if kind is int and minimum == 0:
            words = "a positive integer" if above else "an integer >= 0"
    return f"{words} or null" if optional else words


def number(value: Any, key: str, kind: type, minimum: float | None = None, above: bool = False,
           optional: bool = False, example: Any = "1", maximum: float | None = None) -> float | int | None:
    """``value`` as an int or float, or a DiginError naming ``key``, the expected type and range."""
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int and isinstance(value, float):
        ok = value.is_integer()
    if ok and minimum is not None:
        ok = value > minimum if above else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        raise DiginError(f"{key} must be {expected(kind, minimum, above, maximum=maximum)}, got {value!r} — pass "
                         f"e.g. {key}={text(example)}")
    return kind(value)


def text(value: Any) -> str:
    """A value as it is written on the command line (true, null, auto)."""
    if value is None or isinstance(value, bool):
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)
