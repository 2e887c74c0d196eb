"""What every command shares: one-line errors, exit codes, and the option types that take
several values (``--size 64 48``, ``--weights 2 2 1 1``) or whose choices come from a registry.

Exit codes (every command):

- 0: done;
- 1: an error (one line ``heatvol: error: ...`` on stderr; nothing finished is lost);
- 2: a usage error (a bad option or value, shown by click);
- 3: finished, but some inputs were skipped (each one reported on stderr);
- 130: interrupted (Ctrl-C); what was finished is kept, a rerun resumes.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click

__all__ = ["CONTEXT", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_SKIPPED", "EXIT_INTERRUPTED",
           "fail", "warn", "interruptible", "os_error_line", "one_line", "require_store", "deprecated", "LazyChoice", "MultiValueOption",
           "SizeOption", "WeightsOption"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def one_line(message) -> str:
    """Whatever an exception printed, as one line (a KeyError's quotes removed)."""
    line = " ".join(str(message).split())
    if isinstance(message, KeyError) and len(line) >= 2 and line[0] == line[-1] == "'":
        line = line[1:-1]
    return line


def fail(message: str, code: int = EXIT_ERROR):
    """Print one line to stderr and exit."""
    click.echo(f"heatvol: error: {one_line(message)}", err=True)
    sys.exit(code)


def interruptible(kept: str):
    """Ctrl-C ends the command with one line saying what is kept, and exit status 130."""
    def decorate(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt:
                fail(f"interrupted; {kept}", EXIT_INTERRUPTED)
        return run
    return decorate


def os_error_line(exc: OSError, default: Path) -> str:
    """``FILE: reason`` for an OSError (a read-only folder, a full disk outside the stores)."""
    where = exc.filename or default
    reason = "no space left on device" if exc.errno == 28 else (exc.strerror or str(exc))
    return f"{where}: {reason}"


def warn(line: str) -> None:
    click.echo(f"heatvol: warning: {one_line(line)}", err=True)


def require_store(path: Path, what: str = "pose store") -> Path:
    """``path`` when it holds a pose store (a main file or parts), else exit with one line."""
    path = Path(path)
    if not path.exists() and not path.with_name(path.name + ".parts").exists():
        hint = " (give its path, or run in a folder holding poses.h5)" \
            if path.name == "poses.h5" else ""
        fail(f"{path}: no such {what}{hint}")
    return path


def deprecated(old: str, new: str) -> None:
    """One line on stderr for an option spelling kept for one release."""
    click.echo(f"heatvol: warning: {old} is deprecated and will be removed in the next release; "
               f"use {new}", err=True)


class LazyChoice(click.Choice):
    """A choice whose values come from a registry, read only when a command needs them (so
    ``heatvol --help`` never imports torch or h5py for a list of names)."""

    def __init__(self, load: Callable[[], Iterable[str]], case_sensitive: bool = True):
        self._load = load
        self._loaded: tuple[str, ...] | None = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._load())
        return self._loaded


class MultiValueOption(click.Option):
    """An option followed by several values (``--size 64 48``, ``--weights 2 2 1 1``): it takes
    the tokens after its first value while ``takes(token)`` holds, up to ``max_values`` in all,
    and hands them on joined by spaces; the rest stay arguments. Subclasses set ``takes``."""

    max_values: int | None = None
    takes: Callable[[str], bool]

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        opt = parser._long_opt.get(self.opts[0])
        if opt is None:
            return
        original = opt.process

        def process(value, state):
            values = [value]
            while (state.rargs and self.takes(state.rargs[0])
                   and (self.max_values is None or len(values) < self.max_values)):
                values.append(state.rargs.pop(0))
            original(" ".join(values), state)

        opt.process = process


class SizeOption(MultiValueOption):
    """``--size 56`` (square) or ``--size 64 48`` (H W): a (H, W) tuple of positive ints, as
    :func:`heatvol.params.parse_size` reads it everywhere."""

    max_values = 2
    takes = staticmethod(str.isdigit)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("type", str)
        kwargs.setdefault("metavar", "H [W]")
        super().__init__(*args, **kwargs)

    def type_cast_value(self, ctx, value):
        if value is None:
            return None
        from ..params import parse_size

        try:
            return parse_size(str(value).split(), name=self.opts[0])
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=self) from None


def _is_weights_token(token: str) -> bool:
    """'2', '0.5', '1e-1' or '2,2,1,1': numbers only (so a file named 'x.json' never is)."""
    pieces = [p for p in token.replace(",", " ").split() if p]
    if not pieces:
        return False
    for p in pieces:
        if not all(ch in "0123456789.+-eE" for ch in p):
            return False
        try:
            float(p)
        except ValueError:
            return False
    return True


class WeightsOption(MultiValueOption):
    """``--weights 2 2 1 1`` (or ``2,2,1,1``): takes the numbers that follow it, so result
    files before or after the option stay arguments."""

    takes = staticmethod(_is_weights_token)

    def type_cast_value(self, ctx, value):
        if not isinstance(value, str):
            return None
        try:
            return tuple(float(v) for v in value.replace(",", " ").split())
        except ValueError:
            raise click.BadParameter(f"{value!r}: not numbers (give one weight per file, "
                                     f"e.g. --weights 2 2 1 1)", param_hint="--weights") from None
