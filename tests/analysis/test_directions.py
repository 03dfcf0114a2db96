"""The direction-set registry: ICA first, every baseline built from the same context."""

import numpy as np
import pytest

from darkmatter.analysis import directions


def test_sets_are_ica_then_every_baseline():
    rng = np.random.default_rng(0)
    pcs = np.linalg.qr(rng.standard_normal((8, 8)))[0].T
    ctx = directions.DirectionContext(k=3, d_model=8, seed=42, pca_components=pcs,
                                      dewhitener=pcs[:3] * np.array([3.0, 2.0, 1.0])[:, None])
    ica = rng.standard_normal((3, 8))
    sets = directions.direction_sets(ica, ctx)
    assert list(sets) == directions.set_names() == [directions.ICA, *[b.name for b in directions.baselines()]]
    np.testing.assert_array_equal(sets[directions.ICA], ica)
    for name, d in sets.items():
        assert d.shape == (3, 8), name
    labels = directions.labels(3)
    assert set(labels) == set(sets) and all("3" in v for v in labels.values())


def test_a_registered_baseline_appears_once_and_can_be_removed():
    ctx = directions.DirectionContext(k=2, d_model=4, seed=1, pca_components=np.eye(4), dewhitener=np.eye(4)[:2])
    directions.register_baseline(directions.Baseline(
        name="axes", label="axes ({k})", description="the first k coordinate axes",
        build=lambda c: np.eye(c.d_model)[:c.k]))
    try:
        assert "axes" in directions.set_names()
        np.testing.assert_array_equal(directions.direction_sets(np.ones((2, 4)), ctx)["axes"], np.eye(4)[:2])
        with pytest.raises(ValueError, match="already registered"):
            directions.register_baseline(directions.baselines()[-1])
    finally:
        directions.unregister_baseline("axes")
    assert "axes" not in directions.set_names()


def test_draws_differ_for_random_baselines():
    ctx = directions.DirectionContext(k=2, d_model=16, seed=5, dewhitener=np.eye(16)[:2] * 2)
    for name in (directions.NULL, "random"):
        a, b = list(directions.baseline_draws(name, ctx, 2))
        assert not np.allclose(a, b)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0)


def test_the_matched_null_lives_in_the_subspace_with_its_weighting():
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((10, 10)))[0].T[:4]
    dewhitener = basis * np.array([4.0, 2.0, 1.0, 0.5])[:, None]
    ctx = directions.DirectionContext(k=4, d_model=10, seed=0, dewhitener=dewhitener)
    draws = np.concatenate(list(directions.baseline_draws(directions.NULL, ctx, 200)))
    np.testing.assert_allclose(np.linalg.norm(draws @ basis.T, axis=1), 1.0)  # inside the subspace
    weight = np.abs(draws @ basis.T).mean(0)  # leans towards the high-variance components, as ICA's W does
    assert weight[0] > weight[1] > weight[2] > weight[3]
    with pytest.raises(ValueError, match="dewhitener"):
        directions.matched_null(directions.DirectionContext(k=4, d_model=10, seed=0))


def test_context_must_match_the_ica_set():
    with pytest.raises(ValueError, match="shape"):
        directions.direction_sets(np.ones((2, 4)), directions.DirectionContext(k=3, d_model=4, seed=0))


def test_causal_baselines_are_rotations_of_the_whitened_subspace_whose_directions_are_their_build():
    rng = np.random.default_rng(7)
    pcs = np.linalg.qr(rng.standard_normal((9, 9)))[0].T
    ctx = directions.DirectionContext(k=4, d_model=9, seed=3, pca_components=pcs,
                                      dewhitener=pcs[:4] * np.array([5.0, 3.0, 2.0, 1.0])[:, None])
    causal = directions.causal_baselines()
    assert [b.name for b in causal] == [directions.NULL, directions.PCA]  # the isotropic one is no decomposition
    assert [b.randomised for b in causal] == [True, False] and not directions.baseline("random").causal
    for b in causal:
        assert b.rotation is not None
        R = b.rotation(ctx)
        np.testing.assert_allclose(R @ R.T, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(b.build(ctx), directions.in_subspace(b.rotation)(ctx), atol=1e-12)
    np.testing.assert_array_equal(directions.baseline(directions.PCA).rotation(ctx), np.eye(4))
