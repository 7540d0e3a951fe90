"""The one-line progress bar of long runs (training epochs, sweeps of the toy experiment)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A one-line progress bar on stderr (or ``stream``).

    On a terminal (or with ``in_place=True``) the line is redrawn in place, at most five times a
    second, and ended by ``close``; otherwise (a log file) a line is printed at every tenth of the
    work, so logs stay short. Nothing is shown before the run has lasted ``delay`` seconds. The
    time left is estimated from the work done in this run only: ``done`` at the start (work
    resumed from disk) is left out of the rate.
    """

    def __init__(self, total: int, *, done: int = 0, label: str = "", unit: str = "",
                 stream: TextIO | None = None, delay: float = 0.0, enabled: bool = True,
                 in_place: bool | None = None):
        self.total, self.done, self.label, self.unit = total, done, label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.delay, self.enabled = delay, enabled and total > 0
        self.in_place = (bool(getattr(self.stream, "isatty", lambda: False)())
                         if in_place is None else in_place)
        self.start = time.monotonic()
        self.first_done = done
        self.shown, self.last_draw, self.last_tenth = False, 0.0, -1
        self.text = ""

    def line(self) -> str:
        """The bar as text: label, bar, done/total, seconds so far, the estimate, the caller's text."""
        elapsed = time.monotonic() - self.start
        filled = int(20 * self.done / self.total)
        computed, left = self.done - self.first_done, self.total - self.done
        eta = f", ~{elapsed / computed * left:.0f}s left" if computed > 0 and left > 0 else ""
        unit = f" {self.unit}" if self.unit else ""
        text = f", {self.text}" if self.text else ""
        return (f"{self.label} [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total}{unit}, "
                f"{elapsed:.0f}s{eta}{text}")

    def update(self, n: int = 1, text: str = "") -> None:
        """n more units of work are done; ``text`` (a running loss, say) ends the line."""
        self.done += n
        self.text = text
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < self.delay:
            return
        if self.in_place:
            if now - self.last_draw >= 0.2 or self.done == self.total:
                self.stream.write("\r" + self.line().ljust(100))
                self.stream.flush()
                self.last_draw, self.shown = now, True
        else:
            tenth = 10 * self.done // self.total
            if tenth != self.last_tenth:
                self.stream.write(self.line() + "\n")
                self.stream.flush()
                self.last_tenth, self.shown = tenth, True

    def close(self) -> None:
        """End the redrawn line (a terminal), so that what follows starts on a line of its own."""
        if self.enabled and self.shown and self.in_place:
            self.stream.write("\r" + self.line().ljust(100) + "\n")
            self.stream.flush()
            self.shown = False
