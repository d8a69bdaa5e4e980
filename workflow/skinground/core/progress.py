"""Progress lines for a rule's log: every tenth of the work, with the rate so far."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sized


class Progress:
    """``update(done)`` logs "<what>: done/total (rate/s)" each time another ``1/steps`` of
    ``total`` is done, and at the end."""

    def __init__(self, total: int, what: str, *, log: logging.Logger, steps: int = 10):
        self.total, self.what, self.log = int(total), what, log
        self.every = max(1, self.total // max(1, steps))
        self.next = self.every
        self.t0 = time.perf_counter()

    def update(self, done: int) -> None:
        if done < self.next and done != self.total:
            return
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        self.log.info("%s: %d/%d (%.1f/s)", self.what, done, self.total, rate)
        self.next = (done // self.every + 1) * self.every


def iter_progress(items: Iterable, what: str, *, log: logging.Logger, total: int | None = None,
                  ) -> Iterator:
    """Yield the items, logging :class:`Progress` as they are consumed."""
    n = total if total is not None else len(items) if isinstance(items, Sized) else 0
    progress = Progress(n, what, log=log)
    for i, item in enumerate(items, 1):
        yield item
        progress.update(i)
