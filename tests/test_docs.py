"""The documented commands against the real command line, so that a documented command cannot rot.

Every ``bash``/``sh`` block in README.md and docs/ is read as a user would paste it: each
``sk-edge ...`` command in it (after ``&&``, ``;``, ``|``, inside ``ssh host '...'``) is parsed by
the real click commands, so an option that was renamed or removed, a choice that is no longer
offered, or a malformed value fails here. Every ``python`` block must compile, and each
``sk_edge.build(...)`` keyword must be a field of ``BuildRequest``. Synopses and program output
are ``text`` blocks and are not commands. tests/test_examples.py runs the blocks themselves (or names why
one cannot run here); parsing is what this file adds for every command, inline ones and transcripts too.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
from pathlib import Path

import click
import pytest

from sk_edge.cli import cli
from sk_edge.pipeline import BuildRequest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(kinds: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(page, line, text) of every fenced block whose language is one of ``kinds``."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) in kinds:
                found.append((str(page.relative_to(ROOT)), text[:match.start()].count("\n") + 1, match.group(2)))
    return found


def commands(script: str) -> list[list[str]]:
    """The sk-edge commands a shell block runs, as argument lists (without the program name)."""
    found = []
    for line in re.sub(r"\\\n\s*", " ", script).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.commenters = "#"
        lexer.wordchars += "=.,/:-[]{}*+@%~"
        segment: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set("&|;()<>"):  # an operator ends a command
                if segment and segment[0] == "sk-edge":
                    found.append(segment[1:])
                segment = []
            elif "sk-edge " in token:  # a quoted command: ssh host 'sk-edge ...', bash -c "..."
                found += commands(token)
            elif token != "...":  # "..." elides options in a transcript
                segment.append(token)
    return found


def parse(args: list[str]) -> None:
    """Parse ``args`` with the real commands, as ``sk-edge`` would before running anything."""
    if not args or args[0].startswith("-"):  # the group's own options: sk-edge --version
        cli.make_context("sk-edge", list(args)).close()
        return
    # The group takes no option before its command, so the first word names the command.
    name, rest = args[0], list(args[1:])
    with cli.make_context("sk-edge", [name]) as ctx:
        command = cli.get_command(ctx, name)
        if command is None:
            raise click.UsageError(f"no command {name!r}")
        command.make_context(name, rest, parent=ctx).close()


SHELL = blocks(("bash", "sh", "shell"))
# Transcripts: the "$ sk-edge ..." lines of program output blocks are commands a user copies too.
def transcript_commands(text: str) -> str:
    """The "$ " lines of a transcript, with the lines they continue onto ("\\" at the end)."""
    kept, going = [], False
    for line in text.splitlines():
        if line.startswith("$ ") or going:
            kept.append(line[2:] if line.startswith("$ ") else line)
            going = line.rstrip().endswith("\\")
    return "\n".join(kept)


SHELL += [(page, line, transcript_commands(text)) for page, line, text in blocks(("text", "console", ""))]
INLINE = re.compile(r"`(sk-edge [^`]+)`")


def inline_commands() -> list[tuple[str, int, str]]:
    """``sk-edge ...`` in running text: every complete one (a synopsis with [optional] parts or a|b is not)."""
    found = []
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            for span in INLINE.findall(line):
                if not re.search(r"\[|\||\.\.\.|<|N\b", span):
                    found.append((str(page.relative_to(ROOT)), n, span))
    return found


INLINE_COMMANDS = inline_commands()
SHELL += INLINE_COMMANDS


def test_the_docs_have_commands_to_check():
    assert len([c for _, _, b in SHELL for c in commands(b)]) >= 60


@pytest.mark.parametrize("page, line, script", SHELL, ids=[f"{p}:{n}" for p, n, _ in SHELL])
def test_every_documented_command_parses(page, line, script):
    for args in commands(script):
        try:
            parse(args)
        except (click.MissingParameter, click.BadOptionUsage) as exc:
            # Running text names a command or an option without all it needs ("`sk-edge calibrate`",
            # "`sk-edge build --from`"): incomplete, not rotten. A block is a command to paste: complete.
            if (page, line, script) not in INLINE_COMMANDS:
                pytest.fail(f"{page}:{line}: `sk-edge {' '.join(args)}`: {exc.format_message()}")
        except click.ClickException as exc:
            pytest.fail(f"{page}:{line}: `sk-edge {' '.join(args)}`: {exc.format_message()}")


PYTHON = blocks(("python",))
FIELDS = {f.name for f in dataclasses.fields(BuildRequest)} | {"log", "progress"}


@pytest.mark.parametrize("page, line, source", PYTHON, ids=[f"{p}:{n}" for p, n, _ in PYTHON])
def test_every_python_block_compiles_and_builds_with_real_fields(page, line, source):
    tree = ast.parse(source, filename=f"{page}:{line}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "build" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "sk_edge":
            unknown = [k.arg for k in node.keywords if k.arg not in FIELDS]
            assert not unknown, f"{page}:{line}: sk_edge.build() has no field {unknown}"


def test_the_parser_catches_a_rotten_command():
    """The check can fail: a removed option and a wrong choice are both caught."""
    for rotten in (["build", "--calibration-images", "x"], ["build", "--precision", "int4"], ["frobnicate"]):
        with pytest.raises(click.ClickException):
            parse(rotten)
