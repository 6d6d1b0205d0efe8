"""One logging set-up for every command: short, readable lines on stderr."""
from __future__ import annotations

import logging
import sys


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    if not any(getattr(h, "_s2r", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("[%(levelname)s] %(name)s: %(message)s"))
        h._s2r = True
        root.addHandler(h)
    root.setLevel(level)


class Progress:
    """A single updating progress line on a terminal; plain periodic lines otherwise (CI logs)."""

    def __init__(self, total: int, label: str = "", stream=None, every_s: float = 1.0):
        import time
        self.total, self.label = total, label
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._time = time.monotonic
        self._start = self._time()
        self._last = -1e9
        self.every_s = every_s

    def update(self, i: int, msg: str = "", force: bool = False) -> None:
        now = self._time()
        if not force and now - self._last < (0.1 if self.tty else self.every_s):
            return
        self._last = now
        frac = min(1.0, i / max(1, self.total))
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        line = f"{self.label} [{bar}] {100 * frac:5.1f}% {msg}"
        if 0 < frac < 1 and now - self._start >= 2.0:     # remaining time at the average rate so far
            left = (now - self._start) * (1 - frac) / frac
            line += f" (ETA {int(left // 60)}m{int(left % 60):02d}s)"
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
