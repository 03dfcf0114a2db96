"""Injection–recovery: synthetic sparse features put into the real activations, to measure what the
procedure can find (its completeness and detection limit).

"No dark-matter candidates" means something only beside what the run could have found. As
astronomical surveys state the completeness of a catalogue by planting fake sources in the real
images and running the unchanged pipeline on them, the completeness step adds synthetic sparse
features to the real activations *before* the SAE,

    x' = x + Σ_j f_j d_j,

reruns the whole search on the residual x' − SAE(x') (k sweep, restarts, matched control, floor
test, the candidate rule) and asks, for every injected feature, whether a component recovers its
direction (|cos| ≥ :data:`~darkmatter.analysis.groundtruth.FOUND_COS`) and whether the rule keeps
that component as a candidate (and if not, why not).

Each injected feature has a firing rate (share of tokens it is active on), a variance share (its
E[f²] as a share of the residual's total variance), a document spread (active in all documents, or
concentrated in a few) and a direction kind (uniform on the sphere; inside the residual's top
principal components; in its low-variance tail). One *run* injects a whole grid at once, at mutually
orthogonal directions: the main grid of firing rates × variance shares (uniform directions, all
documents) plus one *arm* (few documents, top PCs or tail, cycling over runs) at every firing rate.
The magnitudes are log-normal (σ :data:`MAGNITUDE_SIGMA`) and non-negative, as SAE latents are.

Rows are generated on a fixed grid of :data:`BLOCK` rows, each block from its own seeded stream, so
a feature's activations never depend on chunk sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from darkmatter.analysis.stats import PCA

#: Firing rates of the main grid (share of tokens).
RATES = (0.002, 0.01, 0.05)
#: Variance shares of the main grid (of the residual's total variance).
SHARES = (0.0003, 0.001, 0.003, 0.01)
#: Variance share of the arms (few documents, top PCs, tail).
ARM_SHARE = 0.003
#: A "few documents" feature is active in documents holding this share of the tokens.
FEW_DOCUMENTS = 0.05
#: Principal components of the residual a "top PCs" direction is drawn in.
TOP_PCS = 10
#: σ of the log-normal magnitudes (median 1 before scaling).
MAGNITUDE_SIGMA = 0.5
#: Rows per generated block.
BLOCK = 65536
#: The arms, cycled over runs.
ARMS = ("few documents", "top PCs", "tail")


@dataclass(frozen=True)
class Grid:
    """What one completeness step injects.

    Attributes:
        rates, shares: the main grid (uniform directions, all documents).
        arm_share: variance share of the arms; few_documents: token share a "few documents" feature
            is confined to.
        runs: injection runs (each injects the main grid and one arm at every rate).
    """

    rates: tuple[float, ...] = RATES
    shares: tuple[float, ...] = SHARES
    arm_share: float = ARM_SHARE
    few_documents: float = FEW_DOCUMENTS
    runs: int = 3


@dataclass(frozen=True)
class Injection:
    """One synthetic feature.

    Attributes:
        id: its number within the run; rate: share of tokens it fires on; share: E[f²] as a share of
            the residual's total variance.
        spread: ``"all documents"`` or ``"few documents"``; kind: ``"uniform"`` (uniformly random on the
            sphere), ``"top PCs"`` or ``"tail"``.
        direction: float64[d_model] unit vector d_j.
        magnitude: a, with f = a · LogNormal(0, :data:`MAGNITUDE_SIGMA`) where it fires.
        documents: int64[m] the unit ids it may fire in (None: all); fire_rate: its rate inside them.
        seed: its activations' stream.
    """

    id: int
    rate: float
    share: float
    spread: str
    kind: str
    direction: np.ndarray
    magnitude: float
    documents: np.ndarray | None
    fire_rate: float
    seed: tuple[int, ...]

    @property
    def cell(self) -> tuple[float, float, str, str]:
        """(rate, share, spread, kind): the grid cell it samples."""
        return self.rate, self.share, self.spread, self.kind


def magnitude_for(share: float, rate: float, total_variance: float, sigma: float = MAGNITUDE_SIGMA) -> float:
    """a such that a feature firing on ``rate`` of the tokens with magnitude a · LogNormal(0, σ) has
    E[f²] = share · total_variance (E[LogNormal²] = exp(2σ²))."""
    return float(np.sqrt(share * total_variance / (rate * np.exp(2 * sigma ** 2))))


def _orthonormal(vectors: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(vectors.T)
    return (q * np.sign(np.diag(r))).T


def plan(grid: Grid, run: int, pca: PCA, units: np.ndarray, seed: int) -> list[Injection]:
    """The features of injection run ``run``: the main grid and one arm at every rate.

    Directions of one run are mutually orthogonal: the random ones are orthonormalised together; a
    "top PCs" direction is random in the span of the residual's first :data:`TOP_PCS` principal
    components, a "tail" one in the span of its components after the 90%-variance count, and the
    random ones are drawn orthogonal to both.

    Args:
        pca: the residual's PCA (its total variance sets the magnitudes; its components the "top PCs"
            and "tail" subspaces).
        units: int[n] the document (unit) of every analysed row.
        seed: the run's seed (with ``run``, every draw's stream).
    Returns:
        the run's injections.
    Raises:
        ValueError: more features than d_model dimensions, or rates outside (0, 1].
    """
    if any(not 0 < r <= 1 for r in grid.rates):
        raise ValueError("injection rates must lie in (0, 1]")
    d = pca.components.shape[1]
    total_variance = float(pca.eigenvalues.sum())
    rng = np.random.default_rng([seed, 1017, run + 1])
    arm = ARMS[run % len(ARMS)]
    cells = [(r, s, "all documents", "uniform") for r in grid.rates for s in grid.shares]
    cells += [(r, grid.arm_share, "few documents" if arm == "few documents" else "all documents",
               "uniform" if arm == "few documents" else arm) for r in grid.rates]
    if len(cells) > d // 2:
        raise ValueError(f"{len(cells)} injected features need more than {d} dimensions")
    comps = np.asarray(pca.components, dtype=np.float64)
    tail_from = min(pca.n_for(0.9), d - len(grid.rates))  # after the 90%-variance count
    directions = np.zeros((len(cells), d))
    for j, (_, _, _, kind) in enumerate(cells):
        if kind == "top PCs":
            directions[j] = rng.standard_normal(TOP_PCS) @ comps[:TOP_PCS]
        elif kind == "tail":
            directions[j] = rng.standard_normal(d - tail_from) @ comps[tail_from:]
    special = [j for j, c in enumerate(cells) if c[3] != "uniform"]
    plain = [j for j, c in enumerate(cells) if c[3] == "uniform"]
    if special:
        directions[special] = _orthonormal(directions[special])
    raw = rng.standard_normal((len(plain), d))
    if special:
        raw -= (raw @ directions[special].T) @ directions[special]
    directions[plain] = _orthonormal(raw)
    ids, sizes = np.unique(units, return_counts=True)
    out = []
    for j, (rate, share, spread, kind) in enumerate(cells):
        docs, fire = None, rate
        if spread == "few documents":
            order = rng.permutation(len(ids))
            take = np.searchsorted(np.cumsum(sizes[order]), grid.few_documents * sizes.sum()) + 1
            docs = np.sort(ids[order[:take]])
            fire = min(1.0, rate * sizes.sum() / sizes[order[:take]].sum())
        out.append(Injection(id=j, rate=rate, share=share, spread=spread, kind=kind, direction=directions[j],
                             magnitude=magnitude_for(share, rate, total_variance), documents=docs, fire_rate=fire,
                             seed=(seed, 1018, run + 1, j + 1)))
    return out


def activations(features: list[Injection], units: np.ndarray, start: int, stop: int) -> np.ndarray:
    """float64[stop − start, n_features] the injected features' activations f_j on rows [start, stop).

    Args:
        units: int[n] the unit of every row (for "few documents" features).
    """
    out = np.zeros((stop - start, len(features)))
    for b in range(start // BLOCK, -(-stop // BLOCK)):
        lo, hi = b * BLOCK, min((b + 1) * BLOCK, len(units))
        a, z = max(start, lo), min(stop, hi)
        if a >= z:
            continue
        for j, f in enumerate(features):
            rng = np.random.default_rng([*f.seed, b + 1])
            fires = rng.random(hi - lo) < f.fire_rate
            mags = f.magnitude * rng.lognormal(0.0, MAGNITUDE_SIGMA, hi - lo)
            if f.documents is not None:
                fires &= np.isin(units[lo:hi], f.documents)
            out[a - start:z - start, j] = (fires * mags)[a - lo:z - lo]
    return out


def inject(x: np.ndarray, features: list[Injection], units: np.ndarray, start: int) -> np.ndarray:
    """float32 rows ``x + Σ_j f_j d_j`` for rows [start, start + len(x)).

    Args:
        x: float[m, d_model] activations of those rows.
    """
    f = activations(features, units, start, start + len(x))
    D = np.stack([g.direction for g in features])
    return (np.asarray(x, dtype=np.float64) + f @ D).astype(np.float32)


@dataclass(frozen=True)
class Recovery:
    """What the search made of one injected feature.

    Attributes:
        best_cos: its best |cos| to any component's mixing direction at the chosen k;
        component: that component; recovered: best_cos ≥ the found threshold;
        kept: recovered and that component is a candidate;
        reasons: why not kept (the candidate rule's reasons, or "not recovered").
    """

    best_cos: float
    component: int
    recovered: bool
    kept: bool
    reasons: list[str]


def score(features: list[Injection], directions: np.ndarray, verdicts: list[list[str]],
          found_cos: float) -> list[Recovery]:
    """Match every injected feature to the search's components.

    Args:
        directions: float[k, d_model] unit mixing directions at the chosen k.
        verdicts: per component, the candidate rule's reasons (empty: a candidate).
        found_cos: |cos| at which a feature counts as recovered.
    """
    D = np.stack([f.direction for f in features])
    cos = np.abs(D @ np.asarray(directions, dtype=np.float64).T)
    out = []
    for j in range(len(features)):
        c = int(np.argmax(cos[j]))
        ok = bool(cos[j, c] >= found_cos)
        why = list(verdicts[c]) if ok else ["not recovered"]
        out.append(Recovery(best_cos=float(cos[j, c]), component=c, recovered=ok, kept=ok and not verdicts[c],
                            reasons=why))
    return out


def detection_limit(shares: list[float], kept: list[float], level: float = 0.9) -> float | None:
    """The smallest variance share from which every larger share of the grid is kept at ≥ ``level``
    (None: not even the largest).

    Args:
        shares: ascending shares of one firing rate; kept: the kept fraction at each.
    """
    limit = None
    for s, k in zip(reversed(shares), reversed(kept)):
        if k < level:
            break
        limit = s
    return limit


@dataclass(frozen=True)
class InjectedFeature:
    """One injected feature and what the search made of it (completeness.json ``features``)."""

    run: int
    rate: float
    share: float
    spread: str
    kind: str
    best_cos: float
    component: int
    recovered: bool
    kept: bool
    reasons: list[str]


@dataclass(frozen=True)
class Cell:
    """One cell of the grid over all runs: trials, how many were recovered and kept, and why not.

    Attributes:
        reasons: {reason: features} for the ones not kept (the candidate rule's first reason, or
            "not recovered").
    """

    rate: float
    share: float
    spread: str
    kind: str
    trials: int
    recovered: int
    kept: int
    reasons: dict[str, int]


@dataclass(frozen=True)
class Limit:
    """The detection limit at one firing rate (main grid: uniform directions, all documents).

    Attributes:
        kept, recovered: the smallest variance share from which every larger share of the grid is kept
            (recovered) in ≥ ``level`` of the trials (None: not even the largest); level: that share.
    """

    rate: float
    kept: float | None
    recovered: float | None
    level: float


MAIN = ("all documents", "uniform")


def cells(features: list[InjectedFeature]) -> list[Cell]:
    """The features pooled by grid cell (rate, share, spread, kind), in a fixed order."""
    groups: dict[tuple[float, float, str, str], list[InjectedFeature]] = {}
    for f in features:
        groups.setdefault((f.rate, f.share, f.spread, f.kind), []).append(f)
    out = []
    for (rate, share, spread, kind), fs in sorted(groups.items(), key=lambda kv: ((kv[0][2], kv[0][3]) != MAIN,
                                                                                    kv[0][2], kv[0][3], kv[0][:2])):
        reasons: dict[str, int] = {}
        for f in fs:
            if not f.kept:
                reasons[f.reasons[0]] = reasons.get(f.reasons[0], 0) + 1
        out.append(Cell(rate=rate, share=share, spread=spread, kind=kind, trials=len(fs),
                        recovered=sum(f.recovered for f in fs), kept=sum(f.kept for f in fs), reasons=reasons))
    return out


def limits(table: list[Cell], level: float = 0.9) -> list[Limit]:
    """Per firing rate of the main grid, the detection limits (:func:`detection_limit`)."""
    out = []
    for rate in sorted({c.rate for c in table if (c.spread, c.kind) == MAIN}):
        row = sorted((c for c in table if c.rate == rate and (c.spread, c.kind) == MAIN), key=lambda c: c.share)
        shares = [c.share for c in row]
        out.append(Limit(rate=rate, kept=detection_limit(shares, [c.kept / c.trials for c in row], level),
                         recovered=detection_limit(shares, [c.recovered / c.trials for c in row], level), level=level))
    return out


def statement(found: list[Limit], trials: int, false_candidates: int | None, largest: float = max(SHARES)) -> str:
    """The detection limit in one sentence, to stand beside every count of candidates.

    Args:
        found: the limits per firing rate; trials: injections per cell of the main grid;
        false_candidates: candidates on the structureless surrogate (None: not run);
        largest: the grid's largest variance share (a limit above it reads "> largest").
    """
    def share(v: float | None) -> str:
        return f"> {largest:.2%}" if v is None else f"{v:.2%}"

    parts = [f"firing on {lim.rate:.1%} of tokens, {share(lim.kept)}" for lim in found]
    null = ("" if false_candidates is None
            else f"; false candidates on a structureless norm-matched surrogate of the residual: {false_candidates}")
    return ("detection limit (the smallest share of the residual's variance at which injected sparse features, "
            f"uniform directions in all documents, are kept as candidates in ≥ 90% of {trials} injections): "
            + "; ".join(parts) + null)


@dataclass(frozen=True)
class RunRecord:
    """One search of the completeness step: which arm it injected, the k it chose, its counts."""

    run: int
    arm: str
    k: int
    n_reproducible: int
    n_candidates: int
    other_candidates: int
    seconds: float


@dataclass(frozen=True)
class CompletenessResult:
    """completeness.json (step 07).

    Attributes:
        grid: rates, shares, arm_share, few_documents, runs, found_cos (|cos| that counts as recovered),
            level (the kept share a detection limit needs).
        residual_variance: the real residual's total variance (the shares' denominator).
        features: every injected feature and what the search made of it.
        cells: the features pooled by grid cell; limits: the detection limit per firing rate.
        runs: per injection run; null: the search on the structureless surrogate (None when skipped).
        false_candidates: its candidates (None when skipped).
        statement: the detection limit and false candidates in one sentence (beside every count).
        seconds: wall time of the whole grid.
    """

    grid: dict[str, object]
    residual_variance: float
    features: list[InjectedFeature]
    cells: list[Cell]
    limits: list[Limit]
    runs: list[RunRecord]
    null: RunRecord | None
    false_candidates: int | None
    statement: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def grid_shares(self) -> list[float]:
        """The main grid's variance shares."""
        return [float(v) for v in self.grid["shares"]]  # type: ignore[attr-defined]
