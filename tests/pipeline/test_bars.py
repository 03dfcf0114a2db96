"""The steps' progress bars: step 04 draws one bar per phase (whitening; per k its fits and its
control's; the sources), one at a time, each with a total it reaches; FitBar is safe under a
thread pool; only rank 0 draws."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from darkmatter.analysis import ica
from darkmatter.analysis.compare import unit_rows
from darkmatter.pipeline.config import Config, with_values
from darkmatter.pipeline.steps import bars

from helpers import run_steps, write_collection


class Recorder:
    """A stand-in for tqdm that records what each bar was given and how far it went."""

    made: list["Recorder"] = []
    open_now = 0
    most_open = 0

    def __init__(self, desc, total, unit, disable=False, **_):
        self.desc, self.total, self.unit, self.disable = desc, total, unit, disable
        self.n, self.closed, self.postfix = 0, False, ""
        self.mininterval = 0.0
        Recorder.made.append(self)
        Recorder.open_now += 1
        Recorder.most_open = max(Recorder.most_open, Recorder.open_now)

    def update(self, n=1):
        assert not self.closed, f"{self.desc}: updated after close"
        self.n += n

    def set_postfix_str(self, s, refresh=True):
        assert not self.closed, f"{self.desc}: postfix after close"
        self.postfix = s

    def close(self):
        if not self.closed:
            Recorder.open_now -= 1
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def recorder(monkeypatch):
    Recorder.made, Recorder.open_now, Recorder.most_open = [], 0, 0
    monkeypatch.setattr(bars, "tqdm", Recorder)
    return Recorder


def test_step_04_draws_one_bar_per_phase_each_with_a_total_it_reaches(tmp_path, recorder):
    rng = np.random.default_rng(0)
    n, d, k = 6_000, 12, 4
    sources = (rng.random((n, k)) < 0.1) * rng.exponential(size=(n, k))
    resid = ((sources - sources.mean(0)) / sources.std(0) @ unit_rows(rng.standard_normal((k, d)))
             + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    cfg = with_values(Config(), dict(outputs=str(tmp_path), n_tokens=n, n_components=k, stability_splits=1))
    write_collection(cfg, resid, resid + 2.0 * rng.standard_normal((n, d)).astype(np.float32))
    run_steps(cfg, 3)
    recorder.made.clear()
    run_steps(cfg, 4)
    assert [(b.desc, b.unit) for b in recorder.made] == [
        (f"whitening (top {k} principal components)", "row"), (f"k={k} (1/1): FastICA fits", "fit"),
        (f"k={k} (1/1): control fits", "fit"), (f"sources at k={k}", "row")]
    assert [b.total for b in recorder.made] == [n, 3, 3, n]  # seed 42 on every row, then one split's two halves
    assert all(b.n == b.total and b.closed and not b.disable for b in recorder.made)
    assert recorder.most_open == 1  # one bar at a time: no stacked bars, no cursor moves in a log


def test_fit_bar_counts_fits_from_many_threads_and_closes_once(recorder):
    seeds, iterations = list(range(8)), 50
    fit_bar = bars.FitBar("k=5: FastICA fits", len(seeds), 5)

    def fit(seed):
        for it in range(1, iterations + 1):
            fit_bar(seed, "full", it, it % 6)
        fit_bar(seed, ica.DONE, iterations, 5)

    threads = [threading.Thread(target=fit, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fit_bar.close()  # what ksweep.sweep does after the k: a no-op once the last fit closed the bar
    fit_bar(0, "full", 1, 0)  # a straggling call after close is ignored
    (made,) = recorder.made
    assert (made.total, made.n, made.closed, made.unit) == (len(seeds), len(seeds), True, "fit")


def test_only_rank_0_draws(recorder, monkeypatch):
    monkeypatch.setattr(bars, "current", lambda: SimpleNamespace(is_main=False))
    assert bars.bar("whitening", 10, "row").disable
    monkeypatch.setattr(bars, "current", lambda: SimpleNamespace(is_main=True))
    assert not bars.bar("whitening", 10, "row").disable
