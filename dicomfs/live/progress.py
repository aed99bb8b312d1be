"""Progress output for long work: a bar on a terminal, periodic log lines otherwise.

Under a service manager stderr is not a terminal; a carriage-return bar
would fill the journal with one endless line, so we log every few seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)


class Progress:
    """Callable matching scan.ProgressCallback: (done, total, rejected)."""

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        log_every: float = 5.0,
        show_rejected: bool = True,
    ) -> None:
        self.label = label
        self.show_rejected = show_rejected  # the count of rejected files (parsing work only)
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.log_every = log_every
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int, rejected: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if not finished and now - self._last < (0.1 if self.interactive else self.log_every):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        if self.interactive:
            width = 30
            filled = int(width * done / total) if total else width
            bar = "#" * filled + "-" * (width - filled)
            tail = f"{rejected} rejected " if self.show_rejected else ""
            self.stream.write(
                f"\r{self.label} [{bar}] {done}/{total} files  {rate:,.0f} files/s  {tail}"
            )
            self.stream.flush()
            self._drawn = True
        else:
            log.info(
                "%s: %d/%d files, %.0f files/s, %d rejected",
                self.label,
                done,
                total,
                rate,
                rejected,
            )

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
