"""How a request field is spelled on the command line: one record beside the field it describes.

The request dataclasses (:class:`~sk_edge.pipeline.BuildRequest`, :class:`~sk_edge.verify.VerifyOptions`,
:class:`~sk_edge.quantize.options.CalibrationOptions`, :class:`~sk_edge.export.options.ExportOptions`)
own every field and its default; a field the command line takes carries an :class:`Option` in its
metadata, and :mod:`sk_edge.cli_fields` makes the click option from the two. So a command's option
has the field's name as its destination and the field's default as its own, by construction: there
is no second copy to diverge. This module does not import click (the library stays free of it);
``kind`` names the click type.

    workspace_mib: int = field(default=2048, metadata=option("TensorRT workspace limit.", flag="--workspace"))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

METADATA_KEY = "sk_edge.option"
KINDS = ("str", "int", "float", "path", "dir", "file", "flag", "csv", "int-csv")


@dataclass(frozen=True)
class Option:
    """One field's command-line option.

    Attributes:
        help: the option's help text.
        flag: the option's name (``--workspace``); empty: ``--`` and the field's name with dashes.
        kind: ``str``, ``int``, ``float``, ``path`` (file or folder), ``dir``, ``file``, ``flag`` (a
            bool), ``csv`` (comma-separated words into a tuple), ``int-csv`` (comma-separated integers).
        metavar: the value's placeholder in the help.
        choices: the values the option takes.
        low, high: the range of an ``int``/``float``; ``low_open``: ``low`` itself is refused.
        finite: NaN and infinity are refused (a NaN threshold compares False and switches its gate off).
        off_flag: for a bool that defaults to True: the flag that sets it False (``--no-verify``).
    """

    help: str
    flag: str = ""
    kind: str = "str"
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    finite: bool = False
    off_flag: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Option kind {self.kind!r} is not one of {', '.join(KINDS)}")


def option(help: str, **spelling: Any) -> dict[str, Option]:
    """Field metadata: ``field(default=..., metadata=option("...", flag="--workspace"))``."""
    return {METADATA_KEY: Option(help, **spelling)}


def same_option(owner: type, name: str, **changes: Any) -> dict[str, Option]:
    """The metadata of ``owner``'s field ``name`` (with ``changes``): one option shared by two requests."""
    spelled = option_of(owner, name)
    if spelled is None:
        raise AttributeError(f"{owner.__name__}.{name} has no command-line option")
    return {METADATA_KEY: dataclasses.replace(spelled, **changes)}


def option_of(owner: type, name: str) -> Option | None:
    for f in dataclasses.fields(owner):
        if f.name == name:
            return f.metadata.get(METADATA_KEY)
    raise AttributeError(f"{owner.__name__} has no field {name!r}")


def field_default(owner: type, name: str) -> Any:
    """The default of ``owner``'s field ``name``: its one copy."""
    for f in dataclasses.fields(owner):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return f.default
    raise AttributeError(f"{owner.__name__} has no field {name!r}")


def spelled_fields(owner: type) -> list[tuple[str, Any, Option]]:
    """``(name, default, option)`` of every field of ``owner`` that the command line takes, in field order."""
    return [
        (f.name, field_default(owner, f.name), f.metadata[METADATA_KEY])
        for f in dataclasses.fields(owner)
        if METADATA_KEY in f.metadata
    ]
