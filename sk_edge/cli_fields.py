"""click options made from a request dataclass's fields (:mod:`sk_edge.fields`): one copy of each default.

``@request_options(BuildRequest)`` adds an option for every field with an :class:`~sk_edge.fields.Option`,
its destination the field's name and its default the field's, so a command passes what it parsed
straight to the dataclass (``BuildRequest(**kwargs)``). Options appear in the help in field order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import click

from .fields import Option, spelled_fields


def finite(ctx, param, value):
    """A float option that must be a finite number: NaN compares False with everything and would switch its gate off."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}")
    return value


def comma_separated(kind: Callable[[str], Any], default: Any = None):
    """A callback parsing ``a,b,c`` into a tuple of ``kind``; an option not given is ``default``."""

    def convert(ctx, param, value):
        if value is None:
            return default
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"'{value}' is not a comma-separated list") from None

    return convert


def _whole(bound: float | None) -> int | None:
    return None if bound is None else int(bound)


def _click_type(spelled: Option):
    if spelled.choices:
        return click.Choice(spelled.choices)
    if spelled.kind in ("path", "dir", "file"):
        return click.Path(path_type=Path, file_okay=spelled.kind != "dir", dir_okay=spelled.kind != "file")
    if spelled.kind == "int":
        if (spelled.low, spelled.high) == (None, None):
            return int
        return click.IntRange(min=_whole(spelled.low), max=_whole(spelled.high))
    if spelled.kind == "float":
        if (spelled.low, spelled.high) == (None, None):
            return float
        return click.FloatRange(min=spelled.low, max=spelled.high, min_open=spelled.low_open)
    return str


def click_option(name: str, default: Any, spelled: Option) -> Callable:
    """The click option of one field."""
    flag = spelled.flag or "--" + name.replace("_", "-")
    if spelled.kind == "flag":
        if spelled.off_flag:  # a True default: the flag turns it off
            return click.option(spelled.off_flag, name, flag_value=False, default=True, help=spelled.help)
        return click.option(flag, name, is_flag=True, default=bool(default), help=spelled.help)
    settings: dict[str, Any] = {
        "help": spelled.help,
        "metavar": spelled.metavar,
        "default": default,
        "show_default": default is not None,
    }
    if spelled.kind in ("csv", "int-csv"):
        # An empty tuple is a default with a meaning of its own (the help says which), not a list to show.
        settings.update(
            callback=comma_separated(int if spelled.kind == "int-csv" else str, default),
            default=",".join(map(str, default)) if default else None,
            show_default=bool(default),
        )
    else:
        settings["type"] = _click_type(spelled)
        if spelled.finite:
            settings["callback"] = finite
    return click.option(flag, name, **settings)


def request_options(owner: type) -> Callable:
    """A decorator adding the options of every spelled field of ``owner`` to a command."""
    fields = spelled_fields(owner)

    def decorate(command):
        for name, default, spelled in reversed(fields):  # click lists the last one applied first
            command = click_option(name, default, spelled)(command)
        return command

    return decorate


def field_option(owner: type, name: str) -> Callable:
    """The option of ``owner``'s field ``name`` alone, for a command that takes it beside options of its own."""
    for field_name, default, spelled in spelled_fields(owner):
        if field_name == name:
            return click_option(name, default, spelled)
    raise AttributeError(f"{owner.__name__}.{name} has no command-line option")
