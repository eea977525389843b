"""Progress for long commands: a tqdm bar on a terminal, plain periodic lines in a log file.

A tqdm bar written to a file is one carriage-return line that a reader of ``make demo > log`` sees
only at the end; :func:`progress_bar` writes there one full line every ``interval`` seconds instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, Protocol

from ropelab.errors import RopeConfigError


class Progress(Protocol):
    """What :func:`progress_bar` returns (a ``tqdm`` bar satisfies it)."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix_str(self, s: str = "") -> Any: ...

    def set_postfix(self, **values: Any) -> Any: ...

    def set_description(self, desc: str = "") -> Any: ...

    def close(self) -> Any: ...

    def __enter__(self) -> Progress: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any: ...


def format_duration(seconds: float) -> str:
    """``"42s"``, ``"1m05s"`` or ``"2h02m"``, from seconds rounded to the nearest second."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Silent:
    """``disable=True``: every call does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "") -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def set_description(self, desc: str = "") -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _LogLines:
    """One flushed line every ``interval`` seconds (checked on each call), and one at close:
    ``lab: 12/40 units (30%), 1m05s elapsed, about 2m32s left - rope L=512``.

    The estimate left is the mean time per unit so far times the units to go.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        stream: IO[str],
        interval: float,
        clock: Callable[[], float],
        initial: int = 0,
    ) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.interval, self.clock = interval, clock
        self.n, self.initial, self.postfix, self.closed = initial, initial, "", False
        self.start = self.last = clock()
        if initial:  # a resumed run says at once how much was already done
            self._write(self.start)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_write()

    def set_postfix_str(self, s: str = "") -> None:
        self.postfix = s
        self._maybe_write()

    def set_postfix(self, **values: Any) -> None:
        """tqdm's keyword form: ``loss=1.2, lr=1e-4`` -> ``loss=1.2, lr=1e-4`` after the line."""
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in values.items()))

    def set_description(self, desc: str = "") -> None:
        """tqdm's description (the lab names the unit running): shown after the counts."""
        self.set_postfix_str(desc)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self.clock())

    def __enter__(self) -> _LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, now: float) -> str:
        """The progress line at clock time ``now``."""
        elapsed = now - self.start
        text = f"{self.desc}: {self.n}/{self.total} {self.unit}"
        if self.total > 0:
            text += f" ({self.n / self.total:.0%})"
        text += f", {format_duration(elapsed)} elapsed"
        done = self.n - self.initial  # units of this run: the rate excludes what a resume skipped
        if done > 0 and self.n < self.total:
            text += f", about {format_duration(elapsed / done * (self.total - self.n))} left"
        return f"{text} - {self.postfix}" if self.postfix else text

    def _maybe_write(self) -> None:
        now = self.clock()
        if not self.closed and now - self.last >= self.interval:
            self._write(now)

    def _write(self, now: float) -> None:
        self.last = now
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def progress_bar(
    total: int,
    *,
    desc: str,
    unit: str = "it",
    disable: bool = False,
    stream: IO[str] | None = None,
    interval: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    initial: int = 0,
) -> Progress:
    """Progress over ``total`` units with ``.update(n=1)``, ``.set_postfix_str(s)``, ``.close()``,
    usable as a context manager.

    On a terminal ``stream`` (default ``sys.stderr``, looked up at call time): a tqdm bar. Elsewhere
    (a log file, a pipe): one plain flushed line every ``interval`` seconds of ``clock`` time, checked
    on each update or postfix change, and a last line at close. ``disable=True`` writes nothing.
    ``initial``: units already done (a resumed run).
    """
    if total < 0:
        raise RopeConfigError(f"progress_bar: total must be >= 0, got {total}")
    if not interval >= 0:
        raise RopeConfigError(f"progress_bar: interval must be >= 0 seconds, got {interval}")
    if disable:
        return _Silent()
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
    return _LogLines(total, desc, unit, stream, interval, clock, initial)
