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
        self.start()
        self._last = -1e9
        self.every_s = every_s

    def start(self, done: int = 0) -> None:
        """(Re)start the ETA clock with `done` items already done (e.g. after a set-up stage, or on resume)."""
        self._start, self._done0 = self._time(), done

    def update(self, i: int, msg: str = "", force: bool = False) -> None:
        now = self._time()
        if not force and now - self._last < (0.1 if self.tty else self.every_s):
            return
        self._last = now
        frac = min(1.0, i / max(1, self.total))
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        line = f"{self.label} [{bar}] {100 * frac:5.1f}% {msg}"
        if frac < 1 and i > self._done0 and now - self._start >= 2.0:   # at the average rate since start()
            left = (now - self._start) * (self.total - i) / (i - self._done0)
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
