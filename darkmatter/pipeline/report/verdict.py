"""The answer in four sentences: what was found and against which null, the detection limit it is
read against, what would change it, and how FastICA ended (converged / settled).

These are the first lines of report.md, the top of the dashboard and the last lines step 08 prints
before the paths. Every figure comes from the typed results (nothing typed by hand); a run without
the completeness grid (`--completeness-runs` 0) says that its zero has no limit.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from darkmatter.analysis import injection
from darkmatter.analysis.injection import CompletenessResult
from darkmatter.pipeline.results import ICAResult

if TYPE_CHECKING:
    from darkmatter.pipeline.report.aggregate import Parts

LABELS = ("Answer", "Detection limit", "What would change it", "Convergence")
"""The label of each verdict line, in order (report.md bolds them)."""

NULL = ("a norm-matched elliptical surrogate of the residual, each token keeping its norm and document, through the "
        "same FastICA")

# what an injected feature that was not kept lacked, and the setting that would help
LEVERS = {
    "not recovered": "a larger k (--n-components; the effective-n rule allows it only with more tokens, --n-tokens)",
    "below noise floor": "more documents (--n-tokens: the floor test is a paired bootstrap over documents)",
    "unstable": "more documents per split half (--n-tokens) or fewer splits (--stability-splits)",
    "undetermined": "more FastICA iterations (--ica-max-iter) or more tokens (--n-tokens)",
}


# the candidate rule's reasons (:data:`darkmatter.analysis.candidates.REASONS`) for the components that came closest
WHY_NOT = {
    "near SAE (raw)": "near an SAE decoder row",
    "near SAE (projected)": "near an SAE decoder row projected into the whitened subspace",
    "positional artifact": "a positional artifact (top activations on the first positions)",
}


WHAT = {"not recovered": "not found by ICA", "below noise floor": "found but below the noise floor",
        "unstable": "found but unstable", "undetermined": "found but undetermined"}


def _pct(share: float) -> str:
    return f"{share:.2%}" if share < 0.001 else f"{share:.1%}" if share >= 0.1 else f"{share:.2%}"


def _rates(rates: list[float]) -> str:
    names = [f"{r:.1%}".replace(".0%", "%") for r in rates]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def finding(p: Parts, novel: list[int]) -> str:
    """What was found, against which null: the count of dark-matter candidates and, when zero, what
    stopped the components that came closest."""
    ica, sim = p.ica, p.similarity
    floor = f"largest control excess kurtosis {ica.floor:.1f}" if ica.control is not None else "control off"
    where = (f"of the k = {ica.k} ICA directions of the residual x − SAE(x) ({ica.pca_variance_kept:.1%} of its "
             f"variance)")
    if novel:
        return (f"{len(novel)} dark-matter candidate{'s' if len(novel) != 1 else ''} (component"
                f"{'s' if len(novel) != 1 else ''} {', '.join(map(str, novel[:20]))}) {where}: settled, stable across "
                f"{ica.resampling_unit} halves, more heavy-tailed than the matched null ({NULL}; {floor}) and farther "
                f"from every SAE decoder row than random rotations in the same subspace reach (99th percentile "
                f"{sim.against_null.null_p99:.3f} raw).")
    repro = [c.component for c in ica.components if c.stable and c.settled and c.above_floor]
    if not repro:
        return (f"no dark-matter candidates: none {where} is both stable across {ica.resampling_unit} halves and more "
                f"heavy-tailed than the matched null ({NULL}; {floor}); the residual's heavy tails are what "
                "that structureless surrogate has too.")
    why = Counter(r for c in sim.components if c.component in repro for r in c.not_candidate_because)
    reasons = "; ".join(f"{n} {WHY_NOT.get(reason, reason)}" if len(repro) > 1 else WHY_NOT.get(reason, reason)
                        for reason, n in why.most_common())
    return (f"no dark-matter candidates. {len(repro)} {where} {'is' if len(repro) == 1 else 'are'} stable across "
            f"{ica.resampling_unit} halves and more heavy-tailed than the matched null ({NULL}; {floor}), but "
            f"{'it is' if len(repro) == 1 else 'they are'} {reasons}.")


def limit(c: CompletenessResult | None) -> str:
    """The detection limit per firing rate in a sentence, and the false candidates of the structureless
    surrogate."""
    if c is None:
        return ("not measured (--completeness-runs 0), so this count of candidates says nothing about what a search "
                "of this size misses.")
    level = c.limits[0].level if c.limits else 0.9
    trials = int(c.grid.get("runs", 0))  # type: ignore[call-overload]
    by_share: dict[float | None, list[float]] = {}
    for lim in c.limits:
        by_share.setdefault(lim.kept, []).append(lim.rate)
    parts = []
    for share, rates in by_share.items():
        if share is None:
            parts.append(f"when they fire on {_rates(rates)} of tokens not even at {_pct(max(c.grid_shares))} of the "
                         "residual's variance, the largest share injected")
        else:
            parts.append(f"from {_pct(share)} of the residual's variance when they fire on {_rates(rates)} of tokens")
    false = ("" if c.false_candidates is None else
             f" The same search on a structureless surrogate of the residual gave {c.false_candidates} false "
             "candidate" + ("" if c.false_candidates == 1 else "s") + ".")
    return (f"injected sparse features (uniform directions, all documents) are kept as candidates in ≥ {level:.0%} of "
            f"{trials} injections " + "; ".join(parts) + f"; weaker features can be present unseen.{false}")


def change(p: Parts) -> str:
    """What would move the limit, from why the injected features below it were not kept."""
    ica = p.ica
    sample = (f"This run: {ica.n_tokens:,} tokens in {ica.n_units:,} {ica.resampling_unit}s, n_eff "
              f"{ica.effective_tokens:,.0f} (design effect {ica.design_effect:.2f}) allows k ≤ {ica.k_bound}; k = "
              f"{ica.k} keeps {ica.pca_variance_kept:.1%} of the residual's variance.")
    c = p.completeness
    if c is None:
        return "measuring the detection limit first (--completeness-runs 3). " + sample
    why: Counter[str] = Counter()
    for cell in c.cells:
        if (cell.spread, cell.kind) == injection.MAIN:
            for reason, n in cell.reasons.items():
                why[reason] += n
    if not why:
        return "nothing on this grid: every injected feature was kept. " + sample
    total = sum(why.values())
    said = [f"{WHAT.get(reason, reason)} ({n} of {total} trials)" for reason, n in why.most_common()]
    levers = [LEVERS[r] for r, _ in why.most_common() if r in LEVERS]
    return (f"the injected features below the limit were {' or '.join(said)}: "
            + (" and ".join(dict.fromkeys(levers)) if levers else "a looser candidate rule") + " would lower it. "
            + sample)


def convergence(ica: ICAResult) -> str:
    """Converged / settled in one sentence, with the flag that changes it."""
    seeds = ica.seeds
    if ica.backend != "torch" or all(s.n_settled is None for s in seeds):
        done = sum(s.converged for s in seeds)
        return (f"{done} of {len(seeds)} FastICA fits met --ica-tol {ica.tol:g} within --ica-max-iter "
                f"{ica.max_iter}; raise --ica-max-iter if the others matter.")
    main, restarts = seeds[0], seeds[1:]
    capped = [s for s in restarts if not (s.converged or s.stopped_on_stability)]
    text = (f"FastICA's \"converged\" means every row met --ica-tol {ica.tol:g}; the engine stops earlier, once its "
            "\"settled\" rows (the identifiable directions) stop changing, so converged False is normal and rows that "
            f"never settled are left out of every count. Here the main fit settled {main.n_settled} of {ica.k} rows")
    if main.converged:
        text += " and converged"
    elif not main.stopped_on_stability:
        text += f" and hit the iteration cap (--ica-max-iter {ica.max_iter})"
    if restarts:
        text += f" and {len(restarts) - len(capped)} of {len(restarts)} restarts stopped once stable"
        if capped:
            text += (f"; {len(capped)} hit the cap (--ica-max-iter {ica.max_iter}) with "
                     f"{'/'.join(str(s.n_settled) for s in capped)} rows settled and cannot tell about the others: "
                     "raising --ica-max-iter changes only that")
    if not capped and (main.converged or main.stopped_on_stability):
        text += f"; none hit the iteration cap (--ica-max-iter {ica.max_iter})"
    return text + "."


def label_and_text(line: str) -> tuple[str, str]:
    """``("Answer", "no dark-matter candidates. …")`` for a verdict line (its label one of :data:`LABELS`);
    ``("", line)`` for a line without one. report.md and the dashboard bold the label."""
    label, sep, text = line.partition(": ")
    return (label, text) if sep and label in LABELS else ("", line)


def verdict(p: Parts, novel: list[int]) -> list[str]:
    """The four verdict lines, each ``"<label>: <sentence>"`` with the labels of :data:`LABELS`.

    Args:
        p: the typed results of steps 01–07; novel: the candidate rule's components.
    Returns:
        list[str] of 4 lines of plain text (settings named by their flags).
    """
    texts = (finding(p, novel), limit(p.completeness), change(p), convergence(p.ica))
    return [f"{label}: {text}" for label, text in zip(LABELS, texts)]
