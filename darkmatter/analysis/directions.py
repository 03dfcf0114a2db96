"""The direction sets every comparison runs over: the ICA directions and each baseline.

Compare (step 05), ground truth, the report, the sweeps and the plots iterate over
:func:`direction_sets`, and step 06's causal add-back over :func:`causal_baselines`, so a new
baseline is one :func:`register_baseline` call here (or in a user's code; :func:`registered` for a
temporary one) and shows up everywhere. The ICA set is always first and is named :data:`ICA`.

A baseline is built from a :class:`DirectionContext`: the same k and d_model as the ICA set,
the run's seed and the residual's principal components. A baseline that is a rotation of the ICA
set's whitened k-subspace (``Baseline.rotation``) is also a decomposition of the residual, so the
causal tests can add its parts back at equal variance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from darkmatter.analysis.compare import unit_rows

#: Name of the set every baseline is compared with.
ICA = "ICA"


@dataclass(frozen=True)
class DirectionContext:
    """What a baseline may use to build k directions.

    Attributes:
        k: directions to build (the ICA set's size).
        d_model: their width.
        seed: the run's seed (baselines that draw at random use it).
        pca_components: float64[d, d_model] principal components of the residual, descending
            variance (None where the caller has none).
        dewhitener: float64[k, d_model] of the ICA set's whitening (components × √eigenvalue):
            maps a rotation in whitened space to d_model directions as it maps FastICA's W.
    """

    k: int
    d_model: int
    seed: int
    pca_components: np.ndarray | None = None
    dewhitener: np.ndarray | None = None


@dataclass(frozen=True)
class Baseline:
    """A direction set to hold the ICA directions against.

    Attributes:
        name: short name used as a key in every JSON and table.
        label: plot label, formatted with ``k`` (e.g. ``"random ({k} unit directions)"``).
        description: one line for the report (what the baseline is and why).
        build: DirectionContext → float64[k, d_model] unit rows.
        rotation: DirectionContext → float64[k, k] orthogonal R: the set is a rotation of the ICA set's
            whitened k-subspace (sources s = z Rᵀ of the whitened residual z, parts a = dewhitenerᵀ Rᵀ;
            ``build`` must give the same directions, the unit rows of R @ dewhitener, as
            :func:`in_subspace` does), so it is a decomposition of the residual and step 06's causal
            tests add its parts back against the ICA set's at equal variance. None: not a decomposition
            of the residual (e.g. isotropic directions outside the subspace), left out of the causal tests.
        randomised: its directions depend on ``DirectionContext.seed``: the causal tests take
            ``--causal-null-draws`` draws of it (and report their spread); a deterministic set is drawn once.
    """

    name: str
    label: str
    description: str
    build: Callable[[DirectionContext], np.ndarray]
    rotation: Callable[[DirectionContext], np.ndarray] | None = None
    randomised: bool = False

    @property
    def causal(self) -> bool:
        """It takes part in the causal add-back (it has a ``rotation``)."""
        return self.rotation is not None


_BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> None:
    """Add a baseline to every comparison. Raises ValueError on a duplicate name or ``"ICA"``."""
    if baseline.name in _BASELINES or baseline.name == ICA:
        raise ValueError(f"a direction set named {baseline.name!r} is already registered")
    _BASELINES[baseline.name] = baseline


def unregister_baseline(name: str) -> None:
    """Remove a registered baseline (tests register temporary ones). Raises KeyError if absent."""
    del _BASELINES[name]


@contextmanager
def registered(baseline: Baseline) -> Iterator[Baseline]:
    """``with registered(Baseline(...)):`` the baseline takes part in every comparison inside the block
    and is unregistered when it ends, however it ends. Raises ValueError as :func:`register_baseline`."""
    register_baseline(baseline)
    try:
        yield baseline
    finally:
        unregister_baseline(baseline.name)


def baselines() -> list[Baseline]:
    """The registered baselines, in registration order."""
    return list(_BASELINES.values())


def baseline(name: str) -> Baseline:
    """The registered baseline ``name``. Raises KeyError if absent."""
    return _BASELINES[name]


def causal_baselines() -> list[Baseline]:
    """The registered baselines the causal tests add back (those with a ``rotation``), in registration order."""
    return [b for b in _BASELINES.values() if b.causal]


def set_names() -> list[str]:
    """Names of every direction set: ``ICA`` first, then the baselines."""
    return [ICA, *_BASELINES]


def labels(k: int) -> dict[str, str]:
    """Plot label of every direction set for k directions."""
    return {ICA: f"ICA ({k} components)", **{b.name: b.label.format(k=k) for b in _BASELINES.values()}}


def direction_sets(ica_directions: np.ndarray, context: DirectionContext) -> dict[str, np.ndarray]:
    """Every direction set, ICA first.

    Args:
        ica_directions: float[k, d_model] ICA mixing directions.
        context: for the baselines; ``context.k`` must equal k.
    Returns:
        {name: float64[k, d_model]} in :func:`set_names` order.
    Raises:
        ValueError: the context's k or d_model differs from the ICA set's.
    """
    if ica_directions.shape != (context.k, context.d_model):
        raise ValueError(f"ICA directions have shape {ica_directions.shape}, the context says "
                         f"({context.k}, {context.d_model})")
    return {ICA: np.asarray(ica_directions, dtype=np.float64),
            **{b.name: b.build(context) for b in _BASELINES.values()}}


def baseline_draws(name: str, context: DirectionContext, n_draws: int) -> Iterator[np.ndarray]:
    """``n_draws`` instances of baseline ``name`` with seeds ``context.seed + i`` (a null
    distribution for randomised baselines; a deterministic one repeats itself)."""
    for i in range(n_draws):
        yield _BASELINES[name].build(replace(context, seed=context.seed + i))


def random_unit(k: int, d_model: int, seed: int) -> np.ndarray:
    """k directions drawn uniformly from the unit sphere in d_model dimensions: float64[k, d_model]."""
    return unit_rows(np.random.default_rng(seed).standard_normal((k, d_model)))


def _top_pca(context: DirectionContext) -> np.ndarray:
    if context.pca_components is None:
        raise ValueError("the PCA baseline needs the residual's principal components")
    return np.asarray(context.pca_components[:context.k], dtype=np.float64)


def random_rotation(k: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal matrix: float64[k, k] (scipy.stats.ortho_group)."""
    from scipy.stats import ortho_group

    return np.eye(1) if k == 1 else ortho_group.rvs(k, random_state=np.random.default_rng([seed, 1015]))


def in_subspace(rotation: Callable[[DirectionContext], np.ndarray]) -> Callable[[DirectionContext], np.ndarray]:
    """The ``build`` of a rotation baseline: unit rows of R @ dewhitener (float64[k, d_model]), R =
    ``rotation(context)``, mapped to d_model as FastICA's W is. The returned build raises ValueError
    where the context has no dewhitener."""
    def build(context: DirectionContext) -> np.ndarray:
        if context.dewhitener is None:
            raise ValueError("a rotation of the whitened subspace needs the ICA set's whitening (dewhitener)")
        return unit_rows(rotation(context) @ np.asarray(context.dewhitener, dtype=np.float64))
    return build


def null_rotation(context: DirectionContext) -> np.ndarray:
    """The matched null's rotation: Haar-random float64[k, k] seeded by ``context.seed``."""
    return random_rotation(context.k, context.seed)


def matched_null(context: DirectionContext) -> np.ndarray:
    """The matched null: a random rotation R in the same whitened k-subspace, mapped to d_model
    through the same dewhitener as FastICA's W (unit rows of R @ dewhitener). It has the ICA
    set's k, subspace and √eigenvalue weighting, and no optimisation.

    Raises:
        ValueError: the context has no dewhitener.
    """
    return in_subspace(null_rotation)(context)


#: Name of the matched null (random rotations in the whitened subspace).
NULL = "null"
#: Name of the principal-components baseline.
PCA = "PCA"
register_baseline(Baseline(
    name=NULL, label="matched null (random rotation in the whitened {k}-subspace)",
    description="random orthogonal rotations in the same whitened k-subspace, mapped through the same dewhitener "
                "as the ICA directions (the null every ICA figure is read against)",
    build=matched_null, rotation=null_rotation, randomised=True))
register_baseline(Baseline(
    name="random", label="isotropic random ({k} unit directions in d_model)",
    description="k directions drawn uniformly from the unit sphere in d_model dimensions (isotropic; ignores the "
                "subspace the ICA directions live in, so it is shown only as a reference)",
    build=lambda c: random_unit(c.k, c.d_model, c.seed), randomised=True))
register_baseline(Baseline(
    name=PCA, label="PCA (top {k} residual components)",
    description="the top-k principal components of the residual",
    build=_top_pca, rotation=lambda c: np.eye(c.k)))
