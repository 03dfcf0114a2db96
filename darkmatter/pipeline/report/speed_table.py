"""Two runs of the same preset side by side: seconds per step, and whether the faster one gives the
same results within their standard errors.

``benchmarks/RESULTS.md`` holds the generated table of the offline default before and after the speed
work (``docs/runs/offline_default_before_speed.json`` against ``docs/runs/offline_default.json``);
``tests/pipeline/test_readme.py`` fails when any check below does not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from darkmatter.analysis.directions import NULL
from darkmatter.pipeline.report.mdtable import table
from darkmatter.pipeline.results.document import Results


@dataclass(frozen=True)
class Agreement:
    """One quantity of both runs and the rule it is held to.

    Attributes:
        quantity: what is compared; before, after: its value in each run, as text;
        rule: the tolerance, in words; ok: the rule holds.
    """

    quantity: str
    before: str
    after: str
    rule: str
    ok: bool


def _within(a: float, b: float, se_a: float, se_b: float, z: float = 2.0) -> bool:
    return abs(a - b) <= z * math.hypot(se_a, se_b)


def agreement(before: Results, after: Results) -> list[Agreement]:
    """The checks: the same SAE (FVU to 0.002), the same k and candidates, reproducible components
    within ±1, each run's noise floor inside the other's 95% bootstrap interval, the same detection
    limit at every firing rate and the same false candidates, and the causal figures (the
    whole subspace's gap closed, ICA − null of every top m) within 2 combined standard errors
    (clustered by document).

    Raises:
        ValueError: a run lacks the ICA, completeness or causal section.
    """
    if after.ica is None or before.ica is None or after.causal is None or before.causal is None \
            or after.completeness is None or before.completeness is None:
        raise ValueError("both runs need steps 04, 06 and 07 (ica, causal, completeness)")
    out: list[Agreement] = []

    def add(quantity: str, b: object, a: object, rule: str, ok: bool) -> None:
        out.append(Agreement(quantity, str(b), str(a), rule, bool(ok)))

    fb, fa = before.sae_stats.metrics.fvu, after.sae_stats.metrics.fvu
    add("SAE FVU on the analysed tokens", f"{fb:.4f}", f"{fa:.4f}", "± 0.002", abs(fb - fa) <= 0.002)
    ib, ia = before.ica, after.ica
    add("chosen k", ib.k, ia.k, "equal", ib.k == ia.k)
    add("reproducible components at the chosen k", ib.n_reproducible, ia.n_reproducible, "± 1",
        abs(ib.n_reproducible - ia.n_reproducible) <= 1)
    add("dark-matter candidates", len(before.candidate_dark_matter_components),
        len(after.candidate_dark_matter_components), "equal",
        len(before.candidate_dark_matter_components) == len(after.candidate_dark_matter_components))
    lo_b, hi_b = ib.floor_interval
    lo_a, hi_a = ia.floor_interval
    add("noise floor (largest control |excess kurtosis|)", f"{ib.floor:.1f} [{lo_b:.1f}, {hi_b:.1f}]",
        f"{ia.floor:.1f} [{lo_a:.1f}, {hi_a:.1f}]", "each inside the other's 95% bootstrap interval",
        lo_b <= ia.floor <= hi_b and lo_a <= ib.floor <= hi_a)
    for lb, la in zip(before.completeness.limits, after.completeness.limits):
        def txt(v: float | None) -> str:
            return "> grid" if v is None else f"{v:.2%}"

        add(f"detection limit, firing on {lb.rate:.1%} of tokens", txt(lb.kept), txt(la.kept), "equal",
            lb.rate == la.rate and lb.kept == la.kept)
    add("false candidates on the structureless surrogate", before.completeness.false_candidates,
        after.completeness.false_candidates, "equal",
        before.completeness.false_candidates == after.completeness.false_candidates)
    cb, ca = before.causal.table, after.causal.table
    sb, sa = cb.subspace_gap_closed, ca.subspace_gap_closed
    add("gap closed by the whole k-subspace", f"{sb.share:.1%} ± {sb.se:.1%}", f"{sa.share:.1%} ± {sa.se:.1%}",
        "within 2 combined SE", _within(sb.share, sa.share, sb.se, sa.se))
    for tb, ta in zip(cb.top_m, ca.top_m):
        for name in (n for n in tb.baselines if n in ta.baselines):
            vb, va = tb.baselines[name].versus, ta.baselines[name].versus
            if vb is None or va is None:  # a schema-6 snapshot kept the paired test for the matched null only
                continue
            add(f"top {tb.m}: ICA − {'matched ' if name == NULL else ''}{name}", f"{vb.difference:+.1%} ± {vb.se:.1%}",
                f"{va.difference:+.1%} ± {va.se:.1%}", "within 2 combined SE",
                tb.m == ta.m and _within(vb.difference, va.difference, vb.se, va.se))
    return out


def _seconds(r: Results) -> dict[str, float]:
    return {s.script: s.timing.seconds for s in r.steps if s.timing}


def speed_markdown(before: Results, after: Results, names: tuple[str, str]) -> str:
    """Seconds per step of both runs (with the ratio) and the :func:`agreement` checks, as markdown."""
    tb, ta = _seconds(before), _seconds(after)
    rows = [[f"`{s}`", f"{tb[s]:.0f}", f"{ta.get(s, float('nan')):.0f}", f"{tb[s] / ta[s]:.1f}×" if ta.get(s) else ""]
            for s in tb]
    total_b, total_a = sum(tb.values()), sum(ta.values())
    rows.append(["**total**", f"**{total_b:.0f}**", f"**{total_a:.0f}**", f"**{total_b / total_a:.1f}×**"])
    checks = agreement(before, after)
    lines = [f"Before: `docs/runs/{names[0]}.json` ({before.machine}; {before.generated}). "
             f"After: `docs/runs/{names[1]}.json` ({after.machine}; {after.generated}). Both idle.", "",
             table(["step", "before s", "after s", "faster"], rows), "",
             f"Same results within their standard errors: {sum(c.ok for c in checks)} of {len(checks)} checks hold.",
             "", table(["quantity", "before", "after", "rule", "holds"],
                       [[c.quantity, c.before, c.after, c.rule, "yes" if c.ok else "**no**"] for c in checks])]
    return "\n".join(lines) + "\n"
