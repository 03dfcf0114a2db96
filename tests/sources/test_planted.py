"""Planted dark matter as a source: reproducible rows, the oracle SAE, and the ActivationSource
interface (rows, built-in SAE, ground truth, row contexts)."""

import numpy as np
import pytest
import torch

from darkmatter.analysis import directions
from darkmatter.analysis.groundtruth import missed_by_decoder
from darkmatter.sources import planted
from darkmatter.sources.base import ActivationSource

from helpers import oracle_residual

SMALL = planted.PlantedSpec(d_model=32, n_features=48, n_withheld=8, magnitude_sigma=0.3, seed=42)


def test_rows_are_reproducible_and_streams_are_distinct():
    x, f = planted.sample(SMALL, "analysis", 10_000)  # spans two blocks
    rows = np.array([0, 5, 8191, 8192, 9999])
    np.testing.assert_array_equal(planted.features_at(SMALL, "analysis", rows), f[rows])
    again = np.concatenate([a for a, _ in planted.rows(SMALL, "analysis", 3000, start=7000)])
    np.testing.assert_array_equal(again, x[7000:10_000])
    x_train, _ = planted.sample(SMALL, "train", 100)
    assert not np.allclose(x_train, x[:100])
    # numpy ignores trailing zeros in seed lists; the streams must still differ from plain seed 42
    d = SMALL.directions()
    assert np.abs(d @ directions.random_unit(48, 32, 42).T).max() < 0.9
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    assert abs((f > 0).mean() - SMALL.p_fire) < 0.002


def test_spec_rejects_impossible_values():
    with pytest.raises(ValueError, match="n_withheld"):
        planted.PlantedSpec(n_features=4, n_withheld=5)
    with pytest.raises(ValueError, match="p_fire"):
        planted.PlantedSpec(p_fire=0)


def test_oracle_sae_knows_exactly_the_non_withheld_directions():
    sae = planted.oracle_sae(SMALL)
    W = sae.W_dec.detach().numpy()
    assert W.shape == (48 - 8, 32)
    truth = SMALL.directions()
    assert set(missed_by_decoder(W, truth)) == set(SMALL.withheld())
    x, f, r = oracle_residual(SMALL, 20_000)
    fvu = (r ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert 0.1 < fvu < 0.6  # a realistic SAE: it explains most, not all, of the variance


def test_planted_source_speaks_the_source_interface():
    source = planted.PlantedSource(SMALL, "withheld")
    assert isinstance(source, ActivationSource)
    hook = source.hook()
    assert hook.d_model == 32 and hook.layer is None and "disjoint" in hook.split
    batches = list(source.rows("analysis", 10_000, 16, "cpu"))
    x = torch.cat([b.x for b in batches]).numpy()
    index = np.concatenate([b.index for b in batches])
    np.testing.assert_array_equal(x, planted.sample(SMALL, "analysis", 10_000)[0])
    np.testing.assert_array_equal(index[:, 0], np.arange(10_000))
    sae = source.builtin_sae("cpu")
    truth = source.ground_truth(sae.W_dec.detach().numpy())
    np.testing.assert_array_equal(truth.dark, SMALL.withheld())
    assert source.unembed() is None and source.note()
    read = source.row_contexts(np.array([3, 9999]), index, None, 10, set(SMALL.withheld().tolist()))
    f = planted.features_at(SMALL, "analysis", np.array([9999]))[0]
    ctx = read(9999)
    assert ctx.row == 9999 and (ctx.context == "(no feature fired)") == (not f.any())
    if f.any():
        assert ctx.token.lstrip("f").rstrip("*") == str(int(np.argmax(f)))


def test_capacity_mode_has_no_builtin_sae_and_reads_dark_features_off_the_decoder():
    source = planted.PlantedSource(SMALL, "capacity")
    assert source.builtin_sae("cpu") is None
    truth = SMALL.directions()
    W_dec = truth[:40]  # knows the first 40 features exactly
    assert source.ground_truth(W_dec).dark.tolist() == list(range(40, 48))
    with pytest.raises(ValueError, match="mode"):
        planted.PlantedSource(SMALL, "nope")
