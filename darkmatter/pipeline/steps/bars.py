"""The steps' progress bars: on stderr, drawn by rank 0 only, one at a time, each with a total so
tqdm shows an ETA.

On a terminal a bar redraws in place every :data:`TERMINAL_INTERVAL` seconds. When stderr is a
file or a pipe (a log), every redraw is one more carriage-return update on the same line, so bars
redraw every :data:`LOG_INTERVAL` seconds there and end with a newline when closed: a log keeps one
line per bar, its last state readable with ``tr '\\r' '\\n'``.
"""

from __future__ import annotations

import sys
import threading
import time

from tqdm.auto import tqdm

from darkmatter.analysis import ica
from darkmatter.distributed import current

#: Seconds between redraws when stderr is a terminal ...
TERMINAL_INTERVAL = 2.0
#: ... and when it is a file or a pipe.
LOG_INTERVAL = 30.0


def bar(desc: str, total: int, unit: str) -> tqdm:
    """A tqdm bar of ``total`` ``unit``s on stderr; disabled on every rank but 0 under torchrun."""
    interval = TERMINAL_INTERVAL if sys.stderr.isatty() else LOG_INTERVAL
    return tqdm(desc=desc, total=total, unit=unit, mininterval=interval, leave=True,
                disable=not current().is_main)


class FitBar:
    """One bar over the FastICA fits of one phase (a k's restarts, or its matched control).

    Its total is the number of fits; it advances when a fit ends (:data:`darkmatter.analysis.ica.DONE`),
    and its postfix shows each running fit's iteration and settled rows. A
    :data:`darkmatter.analysis.ica.Progress`: fits may run on a thread pool at once, so every call
    holds one lock; the bar opens at the first call (a phase's bar does not stand empty while an
    earlier phase runs) and closes when the last fit ends, or at :meth:`close`, whichever is first.
    """

    def __init__(self, desc: str, n_fits: int, k: int):
        self.desc, self.n_fits, self.k = desc, n_fits, k
        self.bar: tqdm | None = None
        self.running: dict[int, tuple[str, int, int]] = {}
        self.done = 0
        self.closed = False
        self.shown = 0.0
        self.lock = threading.Lock()

    def __call__(self, seed: int, phase: str, iteration: int, n_settled: int) -> None:
        with self.lock:
            if self.closed:
                return
            if self.bar is None:
                self.bar = bar(self.desc, self.n_fits, "fit")
            if phase == ica.DONE:
                self.running.pop(seed, None)
                self.done += 1
                self.bar.set_postfix_str(self._postfix(), refresh=False)
                self.bar.update(1)
                if self.done >= self.n_fits:
                    self._close()
                return
            self.running[seed] = (phase, iteration, n_settled)
            now = time.monotonic()
            if now - self.shown >= self.bar.mininterval:  # the postfix changes each iteration: redraw at the bar's pace
                self.shown = now
                self.bar.set_postfix_str(self._postfix())

    def _postfix(self) -> str:
        return "; ".join(f"seed {seed}: it {it}{'' if phase == 'full' else f' ({phase})'}, {settled}/{self.k} settled"
                         for seed, (phase, it, settled) in sorted(self.running.items()))

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.closed = True

    def close(self) -> None:
        """Close the bar (idempotent; later calls are ignored)."""
        with self.lock:
            self._close()
