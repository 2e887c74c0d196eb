"""The one progress display: a tqdm bar on a terminal, a plain line every few percent otherwise.

A redirected log (``heatvol render ... > log 2>&1``) must stay readable: tqdm's ``\\r`` updates
would add thousands of partial lines. So when the stream is not a terminal, :func:`progress`
prints ``render: 40% (1,000/2,500 samples, 12.3/s)`` each time another ``step_percent`` is done
(and every ``interval_s`` seconds when the total is unknown), plus a last line at the end.

>>> with progress(total=len(names), desc="render", unit="sample") as bar:
...     for name in names:
...         ...
...         bar.update()
...     with bar.external_write():          # print a line without breaking the bar
...         click.echo("heatvol: skipped ...", err=True)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO

__all__ = ["progress", "Progress"]


def _plural(unit: str) -> str:
    """sample -> samples, batch -> batches."""
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")


class Progress:
    """What :func:`progress` returns: ``update(n)``, ``close()``, ``external_write()``,
    ``write(line)``, ``set_description()``, ``set_postfix()`` / ``set_postfix_str()``, ``n``,
    ``disable`` and iteration when made over an iterable: the parts of tqdm's interface that
    heatvol uses, so a ``tqdm(...)`` call becomes ``progress(...)``. The quiet-line form (not a
    terminal) is this class itself; on a terminal it wraps a tqdm bar."""

    disable = False

    def __init__(self, iterable: Iterable | None, *, total: int | None, desc: str, unit: str,
                 initial: int, stream: IO, step_percent: float, interval_s: float):
        self._iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total or None
        self.n = int(initial)
        self.desc, self.unit, self.stream = desc, unit, stream
        self._step = max(float(step_percent), 0.1)
        self._interval = float(interval_s)
        self._start = time.monotonic()
        self._start_n = self.n
        self._last_time = self._start
        self._last_level = self._level()
        self._closed = False
        self._postfix = ""

    def _level(self) -> int:
        return int(100.0 * self.n / self.total // self._step) if self.total else 0

    def _line(self) -> None:
        elapsed = time.monotonic() - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
        pct = f"{100.0 * self.n / self.total:.0f}% " if self.total else ""
        post = f" {self._postfix}" if self._postfix else ""
        print(f"{self.desc}: {pct}({done} {_plural(self.unit)}, {rate:.1f}/s, {elapsed:.0f} s)"
              f"{post}", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total:
            level = self._level()
            if level > self._last_level and self.n < self.total:
                self._last_level = level
                self._line()
        elif now - self._last_time >= self._interval:
            self._last_time = now
            self._line()

    def external_write(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def write(self, line: str, file: IO | None = None) -> None:
        """Print a line (tqdm.write's place)."""
        print(line, file=file or self.stream, flush=True)

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix_str(self, text: str) -> None:
        self._postfix = text

    def set_postfix(self, **values) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n > self._start_n or (self.total and self.n >= self.total):
                self._line()

    def __iter__(self) -> Iterator:
        for item in self._iterable:
            yield item
            self.update()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Bar(Progress):
    """A tqdm bar behind the same interface (a terminal)."""

    def __init__(self, iterable, *, total, desc, unit, initial, stream):
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar = tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial,
                         file=stream, dynamic_ncols=True)

    @property
    def n(self) -> int:
        return self._bar.n

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def external_write(self):
        return self._tqdm.external_write_mode(file=self._bar.fp)

    def write(self, line: str, file: IO | None = None) -> None:
        self._bar.write(line, file=file)

    def set_description(self, desc: str) -> None:
        self._bar.set_description(desc)

    def set_postfix_str(self, text: str) -> None:
        self._bar.set_postfix_str(text)

    def set_postfix(self, **values) -> None:
        self._bar.set_postfix(**values)

    def close(self) -> None:
        self._bar.close()

    def __iter__(self) -> Iterator:
        return iter(self._bar)


class _Silent(Progress):
    """``enabled=False``: shows nothing."""

    disable = True

    def __init__(self, iterable, initial: int = 0):
        self._iterable = iterable if iterable is not None else ()
        self.n = int(initial)
        self.stream = sys.stderr

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_description(self, desc: str) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator:
        return iter(self._iterable)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", initial: int = 0, enabled: bool = True, stream: IO | None = None,
             step_percent: float = 5.0, interval_s: float = 30.0) -> Progress:
    """A progress display on ``stream`` (default stderr): a tqdm bar when it is a terminal,
    otherwise one line per ``step_percent`` done (every ``interval_s`` seconds when the total
    is unknown) and one at the end; nothing when ``enabled`` is False."""
    if not enabled:
        return _Silent(iterable, initial)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return _Bar(iterable, total=total, desc=desc, unit=unit, initial=initial, stream=stream)
    return Progress(iterable, total=total, desc=desc, unit=unit, initial=initial, stream=stream,
                    step_percent=step_percent, interval_s=interval_s)
