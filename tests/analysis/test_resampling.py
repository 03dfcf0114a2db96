"""Resampling by document, the block bootstrap, the noise-floor test, the candidate rule and
artifact flags."""

import numpy as np
import pytest

from darkmatter.analysis import candidates, resampling


def test_units_follow_document_separators_across_windows(monkeypatch):
    monkeypatch.setattr(resampling, "MIN_DOCUMENTS", 1)
    # 3 windows of 6 tokens (BOS = 0 at position 0); a separator at window 1, position 3
    tokens = np.array([[0, 5, 6, 7, 8, 9], [0, 5, 6, 0, 8, 9], [0, 5, 6, 7, 8, 9]])
    index = np.array([(w, p) for w in range(3) for p in range(1, 6)])
    units, name = resampling.units_of(index, tokens)
    assert name == "document"
    # the separator itself ends document 0; the next token starts document 1, which runs on
    assert units.tolist() == [0] * 5 + [0, 0, 0, 1, 1] + [1] * 5
    units, name = resampling.units_of(index, None)
    assert name == "window" and units.tolist() == index[:, 0].tolist()
    monkeypatch.setattr(resampling, "MIN_DOCUMENTS", 2)  # one boundary is too few: windows
    assert resampling.units_of(index, tokens)[1] == "window"


def test_restart_rows_are_disjoint_document_halves():
    units = np.repeat(np.arange(40), 7)
    a, b, c = resampling.restart_rows(units, 3, 0.5, seed=1)
    assert not set(units[a]) & set(units[b])
    assert set(units[a]) | set(units[b]) == set(range(40))
    assert len(set(units[c])) == 20 and not np.array_equal(c, a)
    with pytest.raises(ValueError, match="resample"):
        resampling.restart_rows(units, 1, 1.5, seed=0)


def test_block_bootstrap_sees_within_document_dependence():
    rng = np.random.default_rng(0)
    n_docs, per_doc = 400, 50
    units = np.repeat(np.arange(n_docs), per_doc)
    iid = rng.standard_normal((n_docs * per_doc, 2))
    # a per-document scale (a Gaussian scale mixture): heavy tails driven by whole documents
    dependent = iid * rng.lognormal(0, 0.5, n_docs)[units, None]
    d_iid, se_iid = resampling.design_effect(iid, units, seed=0)
    d_dep, se_dep = resampling.design_effect(dependent, units, seed=0)
    assert d_iid == pytest.approx(1.0, abs=0.3)
    np.testing.assert_allclose(se_iid, np.sqrt(24 / len(iid)), rtol=0.25)
    assert d_dep > 2  # tokens of one document are far from independent here (measured 3.3)
    sums = resampling.unit_power_sums(dependent, units)
    from scipy.stats import kurtosis
    np.testing.assert_allclose(sums.excess_kurtosis(), kurtosis(dependent, axis=0), rtol=1e-9)


def test_holm():
    p = np.array([0.001, 0.004, 0.03, 0.5])
    assert candidates.holm(p, 0.01).tolist() == [True, False, False, False]  # 0.004 > 0.01/3
    assert candidates.holm(p, 0.05).tolist() == [True, True, False, False]   # 0.03 > 0.05/2


def test_candidate_rule_gives_reasons():
    got = candidates.classify(settled=np.array([True, True, False, True]), stable=np.array([True, True, True, False]),
                              above_floor=np.array([True, True, True, True]),
                              max_cos=np.array([0.1, 0.1, 0.1, 0.1]), max_cos_projected=np.array([0.2, 0.5, 0.1, 0.1]),
                              artifact=np.array([False, False, False, True]), low=0.3,
                              undetermined=np.array([False, False, False, False]))
    assert got == [[], ["near SAE (projected)"], ["unsettled"], ["unstable", "positional artifact"]]
    und = candidates.classify(np.array([True]), np.array([False]), np.array([True]), np.array([0.1]),
                              np.array([0.1]), np.array([False]), 0.3, undetermined=np.array([True]))
    assert und == [["stability undetermined"]]


def test_units_beyond_the_cap_are_pooled_into_groups_so_memory_does_not_grow_with_n():
    from darkmatter.analysis.resampling import unit_power_sums

    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, 3))
    units = np.repeat(np.arange(1000), 5)  # 1,000 documents of 5 rows
    whole = unit_power_sums(x, units)
    pooled = unit_power_sums(x, units, max_units=64)
    assert whole.sums.shape == (1000, 4, 3) and pooled.sums.shape == (64, 4, 3)
    assert pooled.count.sum() == 5000 and pooled.count.max() == 16 * 5  # whole documents per group
    np.testing.assert_allclose(pooled.sums.sum(0), whole.sums.sum(0))  # the same rows, regrouped
    np.testing.assert_allclose(pooled.excess_kurtosis(), whole.excess_kurtosis())
